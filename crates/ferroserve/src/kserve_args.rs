//! KServe's container contract on the command line: the model-server flags that KServe's
//! controller and `kserve.ModelServer` scripts pass but that mean nothing here are accepted and
//! named in a warning, so a ServingRuntime written for a KServe server starts ferroserve as it is.
//!
//! The flags that do apply are ordinary options of `ferroserve serve` under KServe's spelling
//! (`--model_name`, `--model_dir`, `--http_port`, `--grpc_port`, `--enable_grpc`,
//! `--grpc_max_receive_message_length`); clap takes both `--flag value` and `--flag=value`.

use std::ffi::OsString;

/// Flags of KServe's model server (`kserve/model_server.py`) that take a value and have no
/// meaning for ferroserve: uvicorn workers and threads, logging set-up, docs, and the
/// transformer's predictor client.
const IGNORED_WITH_VALUE: &[&str] = &[
    "workers",
    "max_threads",
    "max_asyncio_workers",
    "enable_docs_url",
    "enable_latency_logging",
    "configure_logging",
    "log_config_file",
    "access_log_format",
    "predictor_host",
    "protocol",
    "predictor_protocol",
    "predictor_use_ssl",
    "predictor_request_timeout_seconds",
    "predictor_request_retries",
    "grpc_max_send_message_length",
];

/// The subcommands and the options that stand in for one (help, version).
const SUBCOMMANDS: &[&str] = &["serve", "status", "help", "-h", "--help", "-V", "--version"];

/// KServe flags without a value that have no meaning for ferroserve.
const IGNORED_SWITCHES: &[&str] = &["enable_predictor_health_check"];

/// The command line without KServe's inapplicable flags (and their values), and those flags as
/// given, for a warning.
#[derive(Debug, PartialEq)]
pub struct Stripped {
    /// What clap parses.
    pub args: Vec<OsString>,
    /// The flags left out, each with its value (`--workers=2`).
    pub ignored: Vec<String>,
}

/// Leaves KServe's inapplicable flags out of `args` (the whole command line, program name
/// first). A flag's value is its `=value` or, without one, the next argument unless that is
/// another flag. Everything after `--` is kept as it is. A command line of flags only (how
/// KServe's runtimes start a server: `--model_name=m --model_dir=/mnt/models`) means `serve`.
pub fn strip_inapplicable(args: impl IntoIterator<Item = OsString>) -> Stripped {
    let mut out = Vec::new();
    let mut ignored = Vec::new();
    let mut args = args.into_iter().peekable();
    out.extend(args.next());
    let first = args.peek().and_then(|a| a.to_str());
    if first.is_some_and(|a| a.starts_with("--") && !SUBCOMMANDS.contains(&a)) {
        out.push(OsString::from("serve"));
    }
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(args.by_ref());
            break;
        }
        let Some(flag) = text.strip_prefix("--") else {
            out.push(arg);
            continue;
        };
        let (name, inline_value) = match flag.split_once('=') {
            Some((name, _)) => (name, true),
            None => (flag, false),
        };
        let name = name.replace('-', "_");
        if IGNORED_SWITCHES.contains(&name.as_str()) {
            ignored.push(text.to_owned());
        } else if IGNORED_WITH_VALUE.contains(&name.as_str()) {
            let mut given = text.to_owned();
            let next_is_value = args
                .peek()
                .and_then(|next| next.to_str())
                .is_some_and(|next| !next.starts_with("--"));
            if !inline_value
                && next_is_value
                && let Some(value) = args.next()
            {
                given = format!("{given} {}", value.to_string_lossy());
            }
            ignored.push(given);
        } else {
            out.push(arg);
        }
    }
    Stripped { args: out, ignored }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let s = strip_inapplicable(args.iter().map(OsString::from));
        let args = s.args.iter().map(|a| a.to_string_lossy().into_owned());
        (args.collect(), s.ignored)
    }

    #[test]
    fn inapplicable_flags_leave_with_their_values_in_both_forms() {
        let (args, ignored) = strip(&[
            "ferroserve",
            "serve",
            "--model_name=m",
            "--workers",
            "2",
            "--max_threads=8",
            "--enable_predictor_health_check",
            "--http_port",
            "8080",
        ]);
        assert_eq!(
            args,
            [
                "ferroserve",
                "serve",
                "--model_name=m",
                "--http_port",
                "8080"
            ]
        );
        assert_eq!(
            ignored,
            [
                "--workers 2",
                "--max_threads=8",
                "--enable_predictor_health_check"
            ]
        );
    }

    #[test]
    fn a_flag_after_an_ignored_flag_is_not_taken_as_its_value() {
        let (args, ignored) = strip(&["ferroserve", "serve", "--workers", "--http_port=1"]);
        assert_eq!(args, ["ferroserve", "serve", "--http_port=1"]);
        assert_eq!(ignored, ["--workers"]);
    }

    #[test]
    fn flags_only_mean_serve() {
        let (args, _) = strip(&["ferroserve", "--model_dir=/mnt/models", "--workers=1"]);
        assert_eq!(args, ["ferroserve", "serve", "--model_dir=/mnt/models"]);
        let (args, _) = strip(&["ferroserve", "--help"]);
        assert_eq!(args, ["ferroserve", "--help"]);
        let (args, _) = strip(&["ferroserve", "status"]);
        assert_eq!(args, ["ferroserve", "status"]);
    }

    #[test]
    fn other_flags_and_values_after_double_dash_are_kept() {
        let all = [
            "ferroserve",
            "serve",
            "--unknown",
            "x",
            "--",
            "--workers",
            "2",
        ];
        let (args, ignored) = strip(&all);
        assert_eq!(args, all);
        assert!(ignored.is_empty());
    }
}
