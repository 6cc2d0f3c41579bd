//! Where `teed`'s log records go: stdout, one line per record, the message
//! alone. Under systemd that is the journal, which adds time, unit and pid;
//! a level or timestamp prefix would only repeat them (and audit lines are
//! specified to the byte in `docs/daemon.md`). Records at `warn` and
//! `error` get the journal's priority prefix (`<4>`, `<3>`) when
//! `JOURNAL_STREAM` says stdout is the journal, so they can be filtered.
//!
//! Nothing logged here may contain a secret: call sites log operation
//! names, namespaces, codes and the daemon's own state, never request data.

use std::io::Write;

struct StdoutLogger {
    journal: bool,
}

impl log::Log for StdoutLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match (self.journal, record.level()) {
            (true, log::Level::Error) => "<3>",
            (true, log::Level::Warn) => "<4>",
            _ => "",
        };
        // Never fails: a broken stdout must not stop the service.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{prefix}{}", record.args());
    }

    fn flush(&self) {
        let _ = std::io::stdout().lock().flush();
    }
}

/// Install the logger (once per process; later calls do nothing).
pub fn init() {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    if log::set_boxed_logger(Box::new(StdoutLogger { journal })).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
