//! What a host lets flows that others submit touch: the directories, variables and network
//! destinations a worker (or `serve` queueing for workers) accepts in a flow's grants.
//!
//! A submitted flow names its grants, but they are resolved on the worker's machine: without
//! a policy, whoever can submit can grant a task any directory or variable of every worker
//! host. With one, the host decides — as Obelisk intersects an activity's allowlist with the
//! server's, so that neither side can widen the other: a run whose grants fall outside is
//! refused, naming each grant. A policy is all or nothing: once any kind is restricted, each
//! kind allows only what it lists (no `--allow-dir`: no directory at all), so that adding one
//! restriction never leaves another kind open by surprise.

use std::path::{Component, Path, PathBuf};

use flowhost_core::flow::{FlowSpec, HttpGrant, SecretSource, TcpGrant};
use flowhost_core::plan::{Problem, ValidationError};

/// The grants a host accepts in flows it did not write. [`Policy::default`] accepts any.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `None`: no policy, anything goes (the behaviour without flags).
    allowed: Option<Allowed>,
}

#[derive(Debug, Clone)]
struct Allowed {
    /// Directories (made absolute and real where they exist) grants must lie in.
    dirs: Vec<PathBuf>,
    /// Variables that `env` and `{ env = … }` secrets may read.
    env: Vec<String>,
    http: Vec<HttpGrant>,
    tcp: Vec<TcpGrant>,
}

impl Policy {
    /// A policy accepting grants of directories inside `dirs`, of the variables `env`, and of
    /// the network destinations inside `net` (each an HTTP origin `scheme://host[:port][/path]`
    /// or a TCP endpoint `host:port`, as flow files write them); everything else is refused.
    /// An entry of `net` that is not a grant is an error naming it.
    pub fn allow(
        dirs: impl IntoIterator<Item = PathBuf>,
        env: impl IntoIterator<Item = String>,
        net: impl IntoIterator<Item = String>,
    ) -> Result<Self, String> {
        let (mut http, mut tcp) = (Vec::new(), Vec::new());
        for entry in net {
            if entry.contains("://") {
                http.push(HttpGrant::parse(&entry)?);
            } else {
                tcp.push(TcpGrant::parse(&entry)?);
            }
        }
        Ok(Self {
            allowed: Some(Allowed {
                dirs: dirs.into_iter().map(|dir| real(&dir)).collect(),
                env: env.into_iter().collect(),
                http,
                tcp,
            }),
        })
    }

    /// Whether this policy restricts anything (false: every grant is accepted).
    pub fn is_restricted(&self) -> bool {
        self.allowed.is_some()
    }

    /// Every grant of `flow` outside this policy, one problem each, naming the task, the
    /// field and the grant; empty when the flow may run here. Directory grants (and secret
    /// files) are resolved against the flow's folder, as the engine resolves them.
    pub fn check(&self, flow: &FlowSpec) -> Vec<Problem> {
        let Some(allowed) = &self.allowed else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let problem = |task: Option<&str>, field: &str, message: String| Problem {
            task: task.map(str::to_owned),
            field: Some(field.to_owned()),
            message,
        };
        for (name, source) in &flow.secrets {
            match source {
                SecretSource::Env(var) if !allowed.env.contains(var) => problems.push(problem(
                    None,
                    "secrets",
                    format!(
                        "secret `{name}` reads variable {var}, which this host does not allow (--allow-env: {})",
                        listed(&allowed.env)
                    ),
                )),
                SecretSource::File(file) if !allowed.dir(&flow.resolve(file)) => {
                    problems.push(problem(
                        None,
                        "secrets",
                        format!(
                            "secret `{name}` reads file {}, outside the directories this host allows (--allow-dir: {})",
                            flow.resolve(file).display(),
                            allowed.dirs_listed()
                        ),
                    ))
                }
                _ => {}
            }
        }
        for (path, task) in flow.task_paths() {
            let task_name = Some(path.as_str());
            for grant in &task.dirs {
                let host = flow.resolve(&grant.host);
                if !allowed.dir(&host) {
                    problems.push(problem(
                        task_name,
                        "dirs",
                        format!(
                            "granted directory {} lies outside the directories this host allows (--allow-dir: {})",
                            host.display(),
                            allowed.dirs_listed()
                        ),
                    ));
                }
            }
            for var in &task.env {
                if !allowed.env.contains(var) {
                    problems.push(problem(
                        task_name,
                        "env",
                        format!(
                            "granted variable {var} is not one this host allows (--allow-env: {})",
                            listed(&allowed.env)
                        ),
                    ));
                }
            }
            let net = task.net.resolve(&flow.net);
            for text in net.http.iter().flatten() {
                // A grant that does not parse is validation's to report.
                if let Ok(grant) = HttpGrant::parse(text)
                    && !allowed.http.iter().any(|wider| grant.within(wider))
                {
                    problems.push(problem(
                        task_name,
                        "net.http",
                        format!(
                            "granted origin {text} is not within what this host allows (--allow-net: {})",
                            allowed.net_listed()
                        ),
                    ));
                }
            }
            for text in net.tcp.iter().flatten() {
                if let Ok(grant) = TcpGrant::parse(text)
                    && !allowed.tcp.iter().any(|wider| grant.within(wider))
                {
                    problems.push(problem(
                        task_name,
                        "net.tcp",
                        format!(
                            "granted endpoint {text} is not within what this host allows (--allow-net: {})",
                            allowed.net_listed()
                        ),
                    ));
                }
            }
        }
        problems
    }

    /// [`Policy::check`] as a validation error of `flow`, when something is outside.
    pub fn validate(&self, flow: &FlowSpec) -> Result<(), ValidationError> {
        let problems = self.check(flow);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                flow: flow.name.clone(),
                problems,
                host_unavailable: false,
            })
        }
    }
}

impl Allowed {
    fn dir(&self, path: &Path) -> bool {
        let path = real(path);
        self.dirs.iter().any(|dir| path.starts_with(dir))
    }

    fn dirs_listed(&self) -> String {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        listed(&dirs)
    }

    fn net_listed(&self) -> String {
        let all: Vec<String> = (self.http.iter().map(ToString::to_string))
            .chain(self.tcp.iter().map(ToString::to_string))
            .collect();
        listed(&all)
    }
}

fn listed(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// `path` made absolute with `.` and `..` resolved lexically, then its longest existing part
/// resolved to the real path (a grant itself may not pass through a symlink, which
/// validation refuses; an allowed directory may).
fn real(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut lexical = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |full, part| full.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return lexical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_core::flow::{DirGrant, TaskSpec};

    fn flow_granting(task: TaskSpec) -> FlowSpec {
        FlowSpec::linear("f").add(task)
    }

    #[test]
    fn no_policy_accepts_everything_and_a_policy_refuses_each_grant_outside_it() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("shared");
        std::fs::create_dir_all(allowed.join("data")).unwrap();
        let mut task = TaskSpec::new("t", "t.wasm");
        task.dirs.push(DirGrant {
            host: allowed.join("data"),
            guest: "/data".into(),
            mode: Default::default(),
        });
        task.dirs.push(DirGrant {
            host: allowed.join("data/../../etc"),
            guest: "/etc".into(),
            mode: Default::default(),
        });
        task.env = vec!["REGION".into(), "HOME".into()];
        task.net.http = Some(vec![
            "https://api.example.org/v1/".into(),
            "https://evil.example.com".into(),
        ]);
        task.net.tcp = Some(vec!["db.internal:5432".into()]);
        let flow = flow_granting(task);
        assert!(Policy::default().check(&flow).is_empty());

        let policy = Policy::allow(
            [allowed.clone()],
            ["REGION".to_owned()],
            ["https://*.example.org".to_owned()],
        )
        .unwrap();
        let problems = policy.check(&flow);
        let fields: Vec<_> = problems.iter().map(|p| p.field.clone().unwrap()).collect();
        assert_eq!(
            fields,
            ["dirs", "env", "net.http", "net.tcp"],
            "{problems:?}"
        );
        assert!(
            problems[0].message.contains("etc"),
            "{}",
            problems[0].message
        );
        assert!(problems[1].message.contains("HOME"));
        assert!(problems[2].message.contains("https://evil.example.com"));
        assert!(problems[3].message.contains("db.internal:5432"));
    }
}
