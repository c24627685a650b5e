//! The integration tests: one binary of modules, each a user's session with the real
//! `flowhost` binary (`CARGO_BIN_EXE_flowhost`) or the library, sharing one testkit
//! (`flowhost-testkit`, through [`kit`], which names the binary under test to it).

mod batch;
mod cache;
mod call;
mod cancel;
mod cli;
mod concurrency;
mod conditions;
mod conform;
mod console;
mod contract;
mod deadlines;
mod durable;
mod engine;
mod faults;
mod hardening;
mod idempotency;
mod journal;
mod kit;
mod leases;
mod net;
mod new;
mod patterns;
mod pg_commits;
mod polyglot;
mod postgres;
mod retries;
mod rundb;
mod sandbox;
mod serve;
mod serve_hardening;
mod subflows;
mod telemetry;
mod validation;
mod volume_create;
mod volume_create_concurrency;
mod volume_service;
mod warm;
mod workers;
