//! Printing reports: a table for people, JSON for programs, the Prometheus text format for
//! node_exporter's textfile collector.

use std::fmt::Write as _;
use std::io::Write;

use pitrkit::error::{Error, Result};
use serde::Serialize;

use crate::OutputArgs;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

/// Prints `report` on stdout in the format `output` asks for.
pub fn print_report<R: Serialize>(
    output: &OutputArgs,
    report: &R,
    table: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    metrics: impl FnOnce() -> Metrics,
) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io = |e| Error::local_io("stdout", e);
    if output.json {
        serde_json::to_writer_pretty(&mut out, report).map_err(|e| {
            if e.is_io() {
                Error::local_io("stdout", e.into())
            } else {
                Error::internal(e)
            }
        })?;
        writeln!(out).map_err(io)?;
    } else if output.prometheus {
        out.write_all(metrics().render().as_bytes()).map_err(io)?;
    } else {
        table(&mut out).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Gauges in the Prometheus text exposition format (version 0.0.4). Every sample carries a
/// `repository` label so that one textfile collector can watch several repositories.
pub struct Metrics {
    repository: String,
    families: Vec<(String, String, Vec<String>)>,
}

impl Metrics {
    pub fn new(repository: &str) -> Self {
        Metrics {
            repository: repository.to_string(),
            families: Vec::new(),
        }
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut l = format!("repository=\"{}\"", escape(&self.repository));
        for (k, v) in labels {
            let _ = write!(l, ",{k}=\"{}\"", escape(v));
        }
        let sample = format!("{name}{{{l}}} {value}");
        match self.families.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, _, samples)) => samples.push(sample),
            None => self
                .families
                .push((name.to_string(), help.to_string(), vec![sample])),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, samples) in &self.families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for s in samples {
                let _ = writeln!(out, "{s}");
            }
        }
        out
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_group_and_labels_escape() {
        let mut m = Metrics::new("s3://b/\"x\"");
        m.gauge("a", "help a", &[("id", "1")], 1.0);
        m.gauge("b", "help b", &[], 2.5);
        m.gauge("a", "help a", &[("id", "2")], 0.0);
        assert_eq!(
            m.render(),
            "# HELP a help a\n# TYPE a gauge\na{repository=\"s3://b/\\\"x\\\"\",id=\"1\"} 1\n\
             a{repository=\"s3://b/\\\"x\\\"\",id=\"2\"} 0\n\
             # HELP b help b\n# TYPE b gauge\nb{repository=\"s3://b/\\\"x\\\"\"} 2.5\n"
        );
    }
}
