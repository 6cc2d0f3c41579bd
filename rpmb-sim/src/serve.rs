//! The frame-stream protocol of `rpmb-sim serve`: raw 512-byte frames in,
//! raw 512-byte frames out (SPEC.md, "Frame stream").

use std::io::{self, Read, Write};

use crate::client::Transport;
use crate::frame::{Frame, FRAME_LEN, REQ_PROGRAM_KEY, REQ_READ_DATA, REQ_WRITE_DATA};
use crate::{Error, RpmbDevice};

/// How many frames the request starting with `first` takes: the block
/// count for an authenticated write (0 counts as 1), otherwise 1.
pub fn group_len(first: &Frame) -> usize {
    if first.req_resp() == REQ_WRITE_DATA {
        usize::from(first.block_count()).max(1)
    } else {
        1
    }
}

/// How many response frames the request starting with `first` produces:
/// none for a key programming or a write (the host follows them with a
/// result read), the block count for an authenticated read (0 reads 1),
/// one for anything else (result read, counter read, unknown type).
pub fn response_count(first: &Frame) -> usize {
    match first.req_resp() {
        REQ_PROGRAM_KEY | REQ_WRITE_DATA => 0,
        REQ_READ_DATA => usize::from(first.block_count()).max(1),
        _ => 1,
    }
}

/// How many response frames a whole frame sequence produces.
pub fn expected_responses(request: &[Frame]) -> usize {
    let mut total = 0;
    let mut rest = request;
    while let Some(first) = rest.first() {
        let n = group_len(first).min(rest.len());
        total += response_count(first);
        rest = rest.get(n..).unwrap_or(&[]);
    }
    total
}

/// Counters of one `serve` run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Requests processed.
    pub requests: u64,
    /// Frames read.
    pub frames_in: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Bytes of an incomplete frame or request at end of input (discarded).
    pub discarded_bytes: u64,
}

enum ReadOutcome {
    Frame(Box<Frame>),
    Eof,
    Partial(usize),
}

fn read_frame<R: Read>(r: &mut R) -> Result<ReadOutcome, Error> {
    let mut f = Box::new(Frame::zeroed());
    let mut got = 0usize;
    while got < FRAME_LEN {
        let Some(dst) = f.0.get_mut(got..) else {
            break;
        };
        match r.read(dst) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read request frames", e)),
        }
    }
    Ok(match got {
        0 => ReadOutcome::Eof,
        FRAME_LEN => ReadOutcome::Frame(f),
        n => ReadOutcome::Partial(n),
    })
}

/// Serves `dev` over a byte stream until end of input: reads requests,
/// writes the responses in the order an eMMC returns them and flushes after
/// each request that produced any. An incomplete frame or request at the
/// end of input is discarded (counted in the stats). Errors: reading or
/// writing the streams failed, or the image could not be written.
pub fn serve<R: Read, W: Write>(
    dev: &mut RpmbDevice,
    mut input: R,
    mut output: W,
) -> Result<ServeStats, Error> {
    let mut stats = ServeStats::default();
    'outer: loop {
        let first = match read_frame(&mut input)? {
            ReadOutcome::Frame(f) => f,
            ReadOutcome::Eof => break,
            ReadOutcome::Partial(n) => {
                stats.discarded_bytes += n as u64;
                break;
            }
        };
        stats.frames_in += 1;
        let want = group_len(&first);
        let mut group = Vec::with_capacity(want.min(64));
        group.push(*first);
        while group.len() < want {
            match read_frame(&mut input)? {
                ReadOutcome::Frame(f) => {
                    stats.frames_in += 1;
                    group.push(*f);
                }
                ReadOutcome::Eof => {
                    stats.discarded_bytes += (group.len() * FRAME_LEN) as u64;
                    break 'outer;
                }
                ReadOutcome::Partial(n) => {
                    stats.discarded_bytes += (group.len() * FRAME_LEN + n) as u64;
                    break 'outer;
                }
            }
        }
        let responses = dev.process(&group)?;
        stats.requests += 1;
        if !responses.is_empty() {
            for f in &responses {
                output
                    .write_all(&f.0)
                    .map_err(|e| Error::io("cannot write response frames", e))?;
            }
            output
                .flush()
                .map_err(|e| Error::io("cannot write response frames", e))?;
            stats.frames_out += responses.len() as u64;
        }
    }
    output
        .flush()
        .map_err(|e| Error::io("cannot write response frames", e))?;
    Ok(stats)
}

/// The client side of the frame stream: a [`Transport`] over any reader and
/// writer, e.g. the stdout and stdin of an `rpmb-sim serve` child process.
#[derive(Debug)]
pub struct StreamTransport<R: Read, W: Write> {
    reader: R,
    writer: W,
}

impl<R: Read, W: Write> StreamTransport<R, W> {
    /// `reader` yields the server's responses, `writer` takes requests.
    pub fn new(reader: R, writer: W) -> Self {
        StreamTransport { reader, writer }
    }

    /// Gives the streams back.
    pub fn into_inner(self) -> (R, W) {
        (self.reader, self.writer)
    }
}

impl<R: Read, W: Write> Transport for StreamTransport<R, W> {
    fn transact(&mut self, request: &[Frame]) -> Result<Vec<Frame>, Error> {
        for f in request {
            self.writer
                .write_all(&f.0)
                .map_err(|e| Error::io("cannot send request frames", e))?;
        }
        self.writer
            .flush()
            .map_err(|e| Error::io("cannot send request frames", e))?;
        let n = expected_responses(request);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match read_frame(&mut self.reader)? {
                ReadOutcome::Frame(f) => out.push(*f),
                _ => {
                    return Err(Error::io(
                        "cannot read response frames",
                        io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the stream"),
                    ))
                }
            }
        }
        Ok(out)
    }
}
