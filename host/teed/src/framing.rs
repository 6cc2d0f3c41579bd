//! Request framing: lines of at most [`MAX_LINE`] bytes read with an idle
//! timeout (between requests) and a request timeout (once a request has
//! started), from anything that reads and can be given a read timeout.
//! Generic so that it is tested over in-memory readers.

use std::io::Read;
use std::time::{Duration, Instant};

use teed_protocol::MAX_LINE;
use zeroize::{Zeroize, Zeroizing};

/// A byte source whose reads can be given a deadline (a socket).
pub trait TimedRead: Read {
    /// Make the next reads give up after `timeout` with `WouldBlock` or
    /// `TimedOut`.
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()>;
}

impl TimedRead for &std::os::unix::net::UnixStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, Some(timeout))
    }
}

/// Reads request lines with a bounded buffer and deadlines.
pub struct LineReader {
    buf: Zeroizing<Vec<u8>>,
    /// Length of the current line (without its `\n`), once found.
    line: usize,
}

/// What [`LineReader::next`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A full line is available ([`LineReader::line`]).
    Line,
    /// The peer closed between requests.
    Closed,
    /// Nothing arrived within the idle timeout.
    Idle,
    /// No `\n` within [`MAX_LINE`] bytes.
    TooLong,
    /// The peer closed in the middle of a line.
    Truncated,
    /// A started request did not complete within the request timeout.
    TimedOut,
    /// The connection failed.
    Failed,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader::new()
    }
}

impl LineReader {
    /// A reader with its whole buffer allocated.
    pub fn new() -> LineReader {
        LineReader {
            // Allocated once at full size: never reallocated, so no copy of
            // a request is left behind in freed memory.
            buf: Zeroizing::new(Vec::with_capacity(MAX_LINE)),
            line: 0,
        }
    }

    /// Read until a whole line is buffered, or until something else
    /// happens. A line counts as started once its first byte arrived;
    /// bytes left over from the previous read start the next line at once.
    pub fn next(
        &mut self,
        source: &mut impl TimedRead,
        idle_timeout: Duration,
        request_timeout: Duration,
    ) -> ReadOutcome {
        let mut started = (!self.buf.is_empty()).then(Instant::now);
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                self.line = i;
                return ReadOutcome::Line;
            }
            let len = self.buf.len();
            if len >= MAX_LINE {
                return ReadOutcome::TooLong;
            }
            let timeout = match started {
                None => idle_timeout,
                Some(t) => request_timeout.saturating_sub(t.elapsed()),
            };
            if timeout.is_zero() || source.set_read_timeout(timeout).is_err() {
                return ReadOutcome::TimedOut;
            }
            self.buf.resize(MAX_LINE, 0);
            let r = source.read(self.buf.get_mut(len..).unwrap_or_default());
            match r {
                Ok(0) => {
                    self.buf.truncate(len);
                    return if len == 0 {
                        ReadOutcome::Closed
                    } else {
                        ReadOutcome::Truncated
                    };
                }
                Ok(n) => {
                    self.buf.truncate(len + n);
                    started.get_or_insert_with(Instant::now);
                }
                Err(e) => {
                    self.buf.truncate(len);
                    match e.kind() {
                        std::io::ErrorKind::Interrupted => {}
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                            return if started.is_none() {
                                ReadOutcome::Idle
                            } else {
                                ReadOutcome::TimedOut
                            }
                        }
                        _ => return ReadOutcome::Failed,
                    }
                }
            }
        }
    }

    /// The current line, without its `\n`.
    pub fn line(&self) -> &[u8] {
        self.buf.get(..self.line).unwrap_or_default()
    }

    /// Drop the current line and its `\n`, wiping it; keep what follows.
    pub fn consume(&mut self) {
        let n = (self.line + 1).min(self.buf.len());
        let rest = self.buf.len() - n;
        self.buf.copy_within(n.., 0);
        if let Some(tail) = self.buf.get_mut(rest..) {
            tail.zeroize();
        }
        self.buf.truncate(rest);
        self.line = 0;
    }

    /// Bytes buffered and not yet consumed (for tests and wiping checks).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::ErrorKind;

    /// Serves scripted reads: chunks of bytes, timeouts and errors.
    struct Script(VecDeque<std::io::Result<Vec<u8>>>);

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(mut chunk)) => {
                    let n = chunk.len().min(out.len());
                    out[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.0.push_front(Ok(chunk.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl TimedRead for Script {
        fn set_read_timeout(&mut self, _: Duration) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn script(items: Vec<std::io::Result<&[u8]>>) -> Script {
        Script(items.into_iter().map(|r| r.map(<[u8]>::to_vec)).collect())
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn lines_split_and_pipelined() {
        let mut s = script(vec![Ok(b"{\"a\":1}\n{\"b\""), Ok(b":2}\n")]);
        let mut r = LineReader::new();
        assert_eq!(r.next(&mut s, T, T), ReadOutcome::Line);
        assert_eq!(r.line(), b"{\"a\":1}");
        r.consume();
        assert_eq!(r.next(&mut s, T, T), ReadOutcome::Line);
        assert_eq!(r.line(), b"{\"b\":2}");
        r.consume();
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.next(&mut s, T, T), ReadOutcome::Closed);
    }

    #[test]
    fn truncated_too_long_idle_timed_out_failed() {
        let mut r = LineReader::new();
        assert_eq!(
            r.next(&mut script(vec![Ok(b"{\"v\":1")]), T, T),
            ReadOutcome::Truncated
        );
        let long = vec![b'a'; MAX_LINE + 10];
        let mut r = LineReader::new();
        assert_eq!(
            r.next(&mut script(vec![Ok(&long)]), T, T),
            ReadOutcome::TooLong
        );
        let mut r = LineReader::new();
        assert_eq!(
            r.next(
                &mut script(vec![Err(std::io::Error::from(ErrorKind::WouldBlock))]),
                T,
                T
            ),
            ReadOutcome::Idle
        );
        let mut r = LineReader::new();
        assert_eq!(
            r.next(
                &mut script(vec![
                    Ok(b"{"),
                    Err(std::io::Error::from(ErrorKind::TimedOut))
                ]),
                T,
                T
            ),
            ReadOutcome::TimedOut
        );
        let mut r = LineReader::new();
        assert_eq!(
            r.next(
                &mut script(vec![
                    Err(std::io::Error::from(ErrorKind::Interrupted)),
                    Err(std::io::Error::from(ErrorKind::BrokenPipe))
                ]),
                T,
                T
            ),
            ReadOutcome::Failed
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_too_long() {
        // MAX_LINE includes the `\n`: MAX_LINE - 1 bytes of text fit.
        let mut ok = vec![b'a'; MAX_LINE - 1];
        ok.push(b'\n');
        let mut r = LineReader::new();
        assert_eq!(r.next(&mut script(vec![Ok(&ok)]), T, T), ReadOutcome::Line);
        let mut over = vec![b'a'; MAX_LINE];
        over.push(b'\n');
        let mut r = LineReader::new();
        assert_eq!(
            r.next(&mut script(vec![Ok(&over)]), T, T),
            ReadOutcome::TooLong
        );
    }
}
