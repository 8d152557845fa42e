//! `/etc/phase/services.toml`: the services phase-init supervises in exec
//! mode (a rootfs without systemd).
//!
//! ```toml
//! [service.plasmd]
//! command = "/usr/bin/plasmd"
//! args = ["--config", "/etc/phase/plasmd.toml"]
//! env = { RUST_LOG = "info" }
//! after = ["net"]            # start once these are ready
//! restart = "on-failure"     # never (default) | on-failure | always
//! backoff_ms = 500           # first restart delay; doubles, at most 30 s
//! modes = ["internet", "local"]  # boot modes it runs in (default: all);
//!                            # a service that listens or announces leaves
//!                            # out "private"
//!
//! [service.net]
//! command = "/bin/sh"
//! args = ["-c", "ip link set lo up"]
//! type = "oneshot"           # ready when it exits 0 (default "simple": ready once started)
//! ```
//!
//! Parsing checks everything a boot would otherwise trip over later: unknown
//! fields, a relative command, a dependency on a service that does not
//! exist, dependency cycles. Each error is one line naming the service and
//! the field.
//!
//! Also compiled on its own by the fuzz targets (`fuzz/`, docs/fuzzing.md):
//! it uses only `std`, `serde`, `toml` and `thiserror`, and no `crate::` item.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Where the rootfs keeps its service list.
pub const SERVICES_FILE: &str = "/etc/phase/services.toml";

/// The longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Never,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Ready as soon as it is started; expected to keep running.
    #[default]
    Simple,
    /// Ready when it has exited with status 0.
    Oneshot,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(skip)]
    pub name: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default, rename = "type")]
    pub kind: Kind,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// The boot modes (`phase.mode`) this service runs in; `None`: all.
    #[serde(default)]
    pub modes: Option<Vec<String>>,
}

fn default_backoff_ms() -> u64 {
    1000
}

impl Service {
    /// The delay before restart number `n` (0-based): `backoff_ms * 2^n`,
    /// at most [`MAX_BACKOFF`].
    pub fn backoff(&self, n: u32) -> Duration {
        let ms = self.backoff_ms.saturating_mul(1u64 << n.min(20));
        Duration::from_millis(ms).min(MAX_BACKOFF)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServicesError {
    #[error("{file}: not valid TOML: {msg}")]
    Toml { file: String, msg: String },
    #[error("{file}: no [service.<name>] tables")]
    Empty { file: String },
    #[error("{file}: unknown top-level key `{key}` (only [service.<name>] tables are allowed)")]
    TopLevel { file: String, key: String },
    #[error("{file}: service `{service}`: {msg}")]
    Field {
        file: String,
        service: String,
        msg: String,
    },
    #[error("{file}: service names must be letters, digits, '-', '_' or '.': `{service}`")]
    Name { file: String, service: String },
    #[error("{file}: dependency cycle: {cycle}")]
    Cycle { file: String, cycle: String },
}

/// A checked service list: every `after` names a service, no cycles.
#[derive(Debug, Clone)]
pub struct Services {
    /// By name.
    pub services: BTreeMap<String, Service>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses and checks a services file; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Services, ServicesError> {
    let f = || file.to_owned();
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ServicesError::Toml {
            file: f(),
            msg: e.message().to_owned(),
        })?;
    let mut services = BTreeMap::new();
    for (key, value) in table {
        if key != "service" {
            return Err(ServicesError::TopLevel { file: f(), key });
        }
        let toml::Value::Table(entries) = value else {
            return Err(ServicesError::TopLevel { file: f(), key });
        };
        for (name, body) in entries {
            if !valid_name(&name) {
                return Err(ServicesError::Name {
                    file: f(),
                    service: name,
                });
            }
            let field = |msg: String| ServicesError::Field {
                file: f(),
                service: name.clone(),
                msg,
            };
            let mut s: Service = body
                .try_into()
                .map_err(|e: toml::de::Error| field(e.message().trim().replace('\n', " ")))?;
            if let Some(m) = s
                .modes
                .iter()
                .flatten()
                .find(|m| !matches!(m.as_str(), "internet" | "local" | "private"))
            {
                return Err(field(format!(
                    "field `modes` names `{m}`; the modes are internet, local, private"
                )));
            }
            if !s.command.starts_with('/') {
                return Err(field(format!(
                    "field `command` must be an absolute path, not `{}`",
                    s.command
                )));
            }
            s.name = name.clone();
            services.insert(name, s);
        }
    }
    if services.is_empty() {
        return Err(ServicesError::Empty { file: f() });
    }
    for s in services.values() {
        for dep in &s.after {
            if !services.contains_key(dep) {
                return Err(ServicesError::Field {
                    file: f(),
                    service: s.name.clone(),
                    msg: format!(
                        "field `after` names `{dep}`, which is not a service in this file"
                    ),
                });
            }
            if dep == &s.name {
                return Err(ServicesError::Cycle {
                    file: f(),
                    cycle: format!("{0} -> {0}", s.name),
                });
            }
        }
    }
    let out = Services { services };
    if let Some(cycle) = out.find_cycle() {
        return Err(ServicesError::Cycle {
            file: f(),
            cycle: cycle.join(" -> "),
        });
    }
    Ok(out)
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<Services, ServicesError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ServicesError::Toml {
        file: file.clone(),
        msg: format!("cannot read: {e}"),
    })?;
    parse(&text, &file)
}

impl Services {
    /// The services that run in boot mode `mode` (their `modes` include it),
    /// and the names of those left out. A service left out is also dropped
    /// from the others' `after` lists: nothing waits for what never starts.
    pub fn for_mode(&self, mode: &str) -> (Services, Vec<String>) {
        let runs = |s: &Service| s.modes.as_ref().is_none_or(|m| m.iter().any(|x| x == mode));
        let left_out: Vec<String> = self
            .services
            .values()
            .filter(|s| !runs(s))
            .map(|s| s.name.clone())
            .collect();
        let services = self
            .services
            .iter()
            .filter(|(_, s)| runs(s))
            .map(|(n, s)| {
                let mut s = s.clone();
                s.after.retain(|d| !left_out.contains(d));
                (n.clone(), s)
            })
            .collect();
        (Services { services }, left_out)
    }

    /// A dependency cycle, as `a -> b -> a`, if there is one.
    fn find_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        fn visit(
            s: &Services,
            n: &str,
            marks: &mut BTreeMap<String, Mark>,
            path: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            match marks.get(n).copied().unwrap_or(Mark::New) {
                Mark::Done => return None,
                Mark::Active => {
                    let start = path.iter().position(|p| p == n).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(n.to_owned());
                    return Some(cycle);
                }
                Mark::New => {}
            }
            marks.insert(n.to_owned(), Mark::Active);
            path.push(n.to_owned());
            for dep in &s.services[n].after {
                if let Some(c) = visit(s, dep, marks, path) {
                    return Some(c);
                }
            }
            path.pop();
            marks.insert(n.to_owned(), Mark::Done);
            None
        }
        let mut marks = BTreeMap::new();
        for n in self.services.keys() {
            let mut path = Vec::new();
            if let Some(c) = visit(self, n, &mut marks, &mut path) {
                return Some(c);
            }
        }
        None
    }

    /// The start waves: every service of a wave depends only on services of
    /// earlier waves, so a wave can start in parallel once those are ready.
    pub fn waves(&self) -> Vec<Vec<String>> {
        let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
        let mut waves: Vec<Vec<String>> = Vec::new();
        // Bounded: a checked list has no cycle, so each round places at least one.
        for _ in 0..=self.services.len() {
            let ready: Vec<&str> = self
                .services
                .values()
                .filter(|s| !placed.contains_key(s.name.as_str()))
                .filter(|s| s.after.iter().all(|d| placed.contains_key(d.as_str())))
                .map(|s| s.name.as_str())
                .collect();
            if ready.is_empty() {
                break;
            }
            for n in &ready {
                placed.insert(n, waves.len());
            }
            waves.push(ready.into_iter().map(str::to_owned).collect());
        }
        waves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[service.net]
command = "/bin/sh"
args = ["-c", "true"]
type = "oneshot"

[service.plasmd]
command = "/usr/bin/plasmd"
after = ["net"]
restart = "on-failure"
backoff_ms = 250
env = { RUST_LOG = "info" }

[service.peer]
command = "/usr/bin/phase"
args = ["serve", "--mdns"]
after = ["net"]
restart = "always"

[service.report]
command = "/bin/true"
after = ["plasmd", "peer"]
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let s = parse(GOOD, "services.toml").expect("valid");
        assert_eq!(s.services.len(), 4);
        let p = &s.services["plasmd"];
        assert_eq!(p.name, "plasmd");
        assert_eq!(p.restart, Restart::OnFailure);
        assert_eq!(p.kind, Kind::Simple);
        assert_eq!(p.env["RUST_LOG"], "info");
        let n = &s.services["net"];
        assert_eq!(n.kind, Kind::Oneshot);
        assert_eq!(n.restart, Restart::Never);
        assert_eq!(n.backoff_ms, 1000);
        assert_eq!(s.services["report"].args, Vec::<String>::new());
    }

    #[test]
    fn waves_respect_dependencies_and_group_parallel_starts() {
        let s = parse(GOOD, "f").expect("valid");
        assert_eq!(
            s.waves(),
            vec![
                vec!["net".to_owned()],
                vec!["peer".to_owned(), "plasmd".to_owned()],
                vec!["report".to_owned()],
            ]
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = parse(GOOD, "f").expect("valid");
        let p = &s.services["plasmd"];
        assert_eq!(p.backoff(0), Duration::from_millis(250));
        assert_eq!(p.backoff(2), Duration::from_millis(1000));
        assert_eq!(p.backoff(40), MAX_BACKOFF);
    }

    fn err(text: &str) -> String {
        let e = parse(text, "services.toml").expect_err("must be refused");
        let s = e.to_string();
        assert!(!s.contains('\n'), "one line: {s}");
        s
    }

    #[test]
    fn bad_input_names_the_service_and_field() {
        let e = err("[service.web]\ncomand = \"/bin/httpd\"\n");
        assert!(e.contains("service `web`") && e.contains("comand"), "{e}");

        let e = err("[service.web]\ncommand = \"/bin/httpd\"\nrestart = \"sometimes\"\n");
        assert!(
            e.contains("service `web`") && e.contains("sometimes"),
            "{e}"
        );

        let e = err("[service.web]\ncommand = \"httpd\"\n");
        assert!(
            e.contains("service `web`") && e.contains("`command`"),
            "{e}"
        );

        let e = err("[service.web]\ncommand = \"/bin/httpd\"\nafter = [\"db\"]\n");
        assert!(e.contains("service `web`") && e.contains("`db`"), "{e}");

        let e = err("[service.web]\ncommand = \"/bin/httpd\"\nargs = \"-v\"\n");
        assert!(e.contains("service `web`"), "{e}");

        let e = err("[service.web]\nargs = []\n");
        assert!(e.contains("service `web`") && e.contains("command"), "{e}");

        let e = err("[service.\"a b\"]\ncommand = \"/x\"\n");
        assert!(e.contains("`a b`"), "{e}");

        let e = err("[services.web]\ncommand = \"/x\"\n");
        assert!(e.contains("`services`"), "{e}");

        let e = err("");
        assert!(e.contains("no [service.<name>]"), "{e}");

        let e = err("[service.web\ncommand = 1");
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn cycles_are_rejected_with_the_cycle_named() {
        let e = err("[service.a]\ncommand = \"/x\"\nafter = [\"b\"]\n\
             [service.b]\ncommand = \"/x\"\nafter = [\"c\"]\n\
             [service.c]\ncommand = \"/x\"\nafter = [\"a\"]\n");
        assert!(e.contains("dependency cycle: a -> b -> c -> a"), "{e}");
        let e = err("[service.a]\ncommand = \"/x\"\nafter = [\"a\"]\n");
        assert!(e.contains("a -> a"), "{e}");
    }

    #[test]
    fn private_mode_leaves_out_services_without_it() {
        let text = GOOD.replace(
            "restart = \"always\"",
            "restart = \"always\"\nmodes = [\"internet\", \"local\"]",
        );
        let s = parse(&text, "f").expect("valid");
        let (all, out) = s.for_mode("local");
        assert_eq!(all.services.len(), 4);
        assert!(out.is_empty());
        let (private, out) = s.for_mode("private");
        assert_eq!(out, vec!["peer".to_owned()]);
        assert!(!private.services.contains_key("peer"));
        assert_eq!(
            private.services["report"].after,
            vec!["plasmd".to_owned()],
            "nothing waits for a service that never starts"
        );
        assert_eq!(private.waves().len(), 3);
        let e = err("[service.web]\ncommand = \"/x\"\nmodes = [\"privat\"]\n");
        assert!(e.contains("service `web`") && e.contains("`privat`"), "{e}");
    }

    #[test]
    fn load_names_a_missing_file() {
        let e = load(Path::new("/nonexistent/services.toml")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/services.toml"), "{e}");
    }
}
