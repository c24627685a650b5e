//! The log on stderr: which lines (`-q`, `-v`, `-vv`, `FLOWHOST_LOG`), in which format
//! (`--log-format text|json`), coloured or not, and a spinner while a plugin compiles.

use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::exit::UsageError;
use super::output::ColorChoice;

/// The variable holding a log filter that replaces `-q` / `-v`.
pub const LOG_ENV: &str = "FLOWHOST_LOG";

/// `--log-format`: how each log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event: time, level, the run's span, message, fields.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `message`, fields, `span` with the
    /// run id), for log shippers.
    Json,
}

/// What the global flags ask of the log.
pub struct LogSettings {
    /// `-v` count: 1 shows flowhost's debug lines, 2 everything's, wasmtime's included.
    pub verbose: u8,
    /// `-q`: warnings and errors only.
    pub quiet: bool,
    /// `--log-format`.
    pub format: LogFormat,
    /// `--color`.
    pub color: ColorChoice,
}

impl LogSettings {
    /// The filter: `FLOWHOST_LOG` when set, else from `-q` / `-v`. By default only
    /// flowhost's own lines: wasmtime and cranelift log their internals at debug, which would
    /// bury a run's lines. An unusable `FLOWHOST_LOG` is a usage error, not silently ignored.
    fn filter(&self) -> Result<EnvFilter, UsageError> {
        if let Some(value) = std::env::var_os(LOG_ENV).filter(|v| !v.is_empty()) {
            let value = value
                .into_string()
                .map_err(|_| UsageError(format!("{LOG_ENV} is not UTF-8")))?;
            return EnvFilter::builder().parse(&value).map_err(|error| {
                UsageError(format!(
                    "{LOG_ENV}=`{value}` is not a log filter ({error}); examples: `debug`, `flowhost=debug`, `warn,flowhost::plugin=info`"
                ))
            });
        }
        let default = match (self.quiet, self.verbose) {
            (true, _) => "warn",
            (false, 0) => "warn,flowhost=info",
            (false, 1) => "warn,flowhost=debug",
            (false, _) => "debug,flowhost=trace",
        };
        Ok(EnvFilter::new(default))
    }

    /// Installs the log. Writes to a closed stderr are dropped quietly (see `output`).
    pub fn init(&self) -> Result<(), UsageError> {
        let filter = self.filter()?;
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .log_internal_errors(false);
        let fmt = match self.format {
            LogFormat::Text => fmt
                .with_ansi(self.color.stderr_colored())
                .with_target(false)
                .boxed(),
            LogFormat::Json => fmt
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .boxed(),
        };
        let spinning = self.format == LogFormat::Text
            && !self.quiet
            && std::io::IsTerminal::is_terminal(&std::io::stderr());
        // On a terminal the spinner says it; elsewhere the log line does.
        let fmt = fmt.with_filter(filter_fn(move |meta| {
            !(spinning
                && meta.is_event()
                && meta.target() == flowhost::COMPILE_TARGET
                && *meta.level() == Level::INFO)
        }));
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .with(spinning.then_some(CompileSpinner))
            .init();
        Ok(())
    }
}

/// Shows a spinner naming the plugin while it compiles (a Python or JavaScript component
/// takes tens of seconds): the runtime compiles inside a span of target
/// [`flowhost::COMPILE_TARGET`], and the spinner lasts as long as the span.
struct CompileSpinner;

/// The spinner of one open compile span, kept in the span's extensions.
struct Spinner(ProgressBar);

/// Reads the span's `plugin` field.
#[derive(Default)]
struct PluginField(String);

impl Visit for PluginField {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "plugin" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "plugin" {
            self.0 = value.to_owned();
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for CompileSpinner {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != flowhost::COMPILE_TARGET {
            return;
        }
        let mut plugin = PluginField::default();
        attrs.record(&mut plugin);
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} compiling plugin {msg} ({elapsed})")
                .expect("valid spinner template"),
        );
        bar.set_message(plugin.0);
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Spinner(bar));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(Spinner(bar)) = span.extensions_mut().remove::<Spinner>()
        {
            bar.finish_and_clear();
        }
    }
}
