//! The device's side of the RPMB protocol: splitting a frame stream into
//! requests, the write phase (program key, authenticated write with its
//! checks and its crash-safe commit) and the read phase (result, counter and
//! data reads with their MACs).

use super::*;

impl RpmbDevice {
    /// One eMMC transaction as a stream of frames, the way `rpmb-sim serve`
    /// sees them: the request frames the host writes (CMD25), returning the
    /// response frames the host then reads (CMD18).
    ///
    /// The frames are split into requests (SPEC.md, "Frame stream"): an
    /// authenticated write takes as many frames as its first frame's block
    /// count says (0 counts as 1), every other request one frame. Program key
    /// and write produce no response; a result read, a counter read or an
    /// unknown request type one; an authenticated read of N blocks N (a block
    /// count of 0 reads 1). So `[write frames.., result read]` gives 1
    /// frame, `[program key, result read]` 1, `[counter read]` 1 and
    /// `[read with block count N]` N. Malformed requests are answered with
    /// result codes, never a panic; `Err` means the image could not be
    /// written (the device is then stopped, see [`Error::Poisoned`]).
    pub fn process(&mut self, request: &[Frame]) -> Result<Vec<Frame>, Error> {
        self.check_alive()?;
        let mut out = Vec::new();
        let mut rest = request;
        while let Some(first) = rest.first() {
            let n = group_len(first).min(rest.len());
            let (group, tail) = rest.split_at(n);
            self.write_phase(group)?;
            let count = response_count(first);
            if count > 0 {
                out.extend(self.read_phase(count));
            }
            rest = tail;
        }
        Ok(out)
    }

    /// One request in the shape OP-TEE's RPMB RPC (and tee-supplicant's
    /// `rpmb_data_req`) uses: `request` holds the frames of one command,
    /// all of one type, without a result-read frame (for a key programming
    /// or a write the device issues the result read itself, as
    /// tee-supplicant does), and `response_frames` is the size of the
    /// response buffer in frames. For an authenticated read `response_frames`
    /// is the block count (OP-TEE leaves the frame's block count at 0 and the
    /// eMMC takes the count from CMD23). Shapes tee-supplicant rejects are
    /// rejected with [`Error::Protocol`] and do not reach the device.
    pub fn process_rpmb_request(
        &mut self,
        request: &[Frame],
        response_frames: usize,
    ) -> Result<Vec<Frame>, Error> {
        self.check_alive()?;
        let first = request
            .first()
            .ok_or_else(|| Error::Protocol("no request frames".into()))?;
        let t = first.req_resp();
        if request.iter().any(|f| f.req_resp() != t) {
            return Err(Error::Protocol(
                "all request frames shall be of the same type".into(),
            ));
        }
        match t {
            REQ_PROGRAM_KEY | REQ_WRITE_DATA => {
                if response_frames != 1 {
                    return Err(Error::Protocol("expected one response frame".into()));
                }
                self.write_phase(request)?;
                self.write_phase(&[Frame::new_request(REQ_RESULT_READ)])?;
                Ok(self.read_phase(1))
            }
            REQ_READ_COUNTER | REQ_RESULT_READ => {
                if request.len() != 1 || response_frames != 1 {
                    return Err(Error::Protocol(
                        "expected one request frame and one response frame".into(),
                    ));
                }
                self.write_phase(request)?;
                Ok(self.read_phase(1))
            }
            REQ_READ_DATA => {
                if request.len() != 1 {
                    return Err(Error::Protocol("expected one request frame".into()));
                }
                if response_frames == 0 || response_frames > usize::from(u16::MAX) {
                    return Err(Error::Protocol(format!(
                        "cannot read {response_frames} frames"
                    )));
                }
                self.write_phase(request)?;
                Ok(self.read_phase(response_frames))
            }
            other => Err(Error::Protocol(format!(
                "unsupported request type {other:#06x}"
            ))),
        }
    }

    fn check_alive(&self) -> Result<(), Error> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    pub(super) fn expired(&self) -> bool {
        self.state.write_counter == u32::MAX
    }

    fn result_field(&self, code: ResultCode) -> u16 {
        code.as_u16()
            | if self.expired() {
                RESULT_COUNTER_EXPIRED
            } else {
                0
            }
    }

    fn sync_if_durable(&mut self) -> io::Result<()> {
        if self.durable {
            self.storage.sync()
        } else {
            Ok(())
        }
    }

    /// Runs `f`; an I/O error stops the device.
    fn guarded(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Self) -> io::Result<()>,
    ) -> Result<(), Error> {
        match f(self) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.poisoned = true;
                Err(Error::io(format!("{}: {what}", self.name), e))
            }
        }
    }

    /// The write phase of one request (CMD25 with `frames`).
    fn write_phase(&mut self, frames: &[Frame]) -> Result<(), Error> {
        let Some(first) = frames.first() else {
            return Ok(());
        };
        let single = frames.len() == 1;
        self.pending = Pending::Nothing;
        match first.req_resp() {
            REQ_PROGRAM_KEY => self.program_key(frames)?,
            REQ_WRITE_DATA => self.write_data(frames)?,
            REQ_READ_COUNTER if single => {
                self.pending = Pending::CounterRead {
                    nonce: first.nonce(),
                }
            }
            REQ_READ_DATA if single => {
                self.pending = Pending::DataRead {
                    address: first.address(),
                    nonce: first.nonce(),
                }
            }
            REQ_RESULT_READ if single => self.pending = Pending::ResultRead,
            REQ_READ_COUNTER => {
                self.pending = Pending::Failed {
                    resp: RESP_READ_COUNTER,
                    result: ResultCode::GeneralFailure,
                }
            }
            REQ_READ_DATA => {
                self.pending = Pending::Failed {
                    resp: RESP_READ_DATA,
                    result: ResultCode::GeneralFailure,
                }
            }
            _ => {
                self.pending = Pending::Failed {
                    resp: 0,
                    result: ResultCode::GeneralFailure,
                }
            }
        }
        Ok(())
    }

    fn program_key(&mut self, frames: &[Frame]) -> Result<(), Error> {
        let result = match frames {
            [f] if !self.state.key_programmed => {
                let mut new = self.state.clone();
                new.seq = new.seq.wrapping_add(1);
                new.key_programmed = true;
                new.key = Zeroizing::new(f.key_mac());
                new.last_op = REQ_PROGRAM_KEY;
                new.last_result = ResultCode::Ok.as_u16();
                new.last_address = 0;
                let rec = new.encode();
                self.guarded("cannot program key", |d| {
                    d.storage.write_at(State::slot_offset(new.seq), &rec[..])?;
                    d.sync_if_durable()
                })?;
                self.state = new;
                ResultCode::Ok
            }
            // The key is one-time programmable, as on an eMMC.
            [_] => ResultCode::WriteFailure,
            _ => ResultCode::GeneralFailure,
        };
        self.result_reg = ResultReg {
            op: REQ_PROGRAM_KEY,
            result,
            address: 0,
        };
        Ok(())
    }

    fn write_data(&mut self, frames: &[Frame]) -> Result<(), Error> {
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return Ok(());
        };
        let address = first.address();
        let result = self.check_write(frames, first, last);
        let result = match result {
            ResultCode::Ok => {
                self.commit_write(address, frames)?;
                ResultCode::Ok
            }
            other => other,
        };
        self.result_reg = ResultReg {
            op: REQ_WRITE_DATA,
            result,
            address,
        };
        Ok(())
    }

    /// The checks of an authenticated write, in the JEDEC order.
    fn check_write(&self, frames: &[Frame], first: &Frame, last: &Frame) -> ResultCode {
        if !self.state.key_programmed {
            return ResultCode::KeyNotProgrammed;
        }
        if self.expired() {
            // Reported as 0x0085: write failure with the expired bit.
            return ResultCode::WriteFailure;
        }
        let count = first.block_count();
        let well_formed = usize::from(count) == frames.len()
            && count >= 1
            && count <= self.layout.max_write_blocks
            && frames.iter().all(|f| {
                f.req_resp() == REQ_WRITE_DATA
                    && f.block_count() == count
                    && f.address() == first.address()
                    && f.write_counter() == first.write_counter()
            });
        if !well_formed {
            return ResultCode::GeneralFailure;
        }
        if u32::from(first.address()) + u32::from(count) > self.layout.capacity_blocks {
            return ResultCode::AddressFailure;
        }
        let mac = frame_mac(&self.state.key, frames);
        if !mac_eq(&mac, &last.key_mac()) {
            return ResultCode::AuthFailure;
        }
        if first.write_counter() != self.state.write_counter {
            return ResultCode::CounterFailure;
        }
        ResultCode::Ok
    }

    /// The commit protocol of an authenticated write (SPEC.md):
    /// journal, sync, blocks + state record, sync.
    fn commit_write(&mut self, address: u16, frames: &[Frame]) -> Result<(), Error> {
        let mut data = Vec::with_capacity(frames.len() * BLOCK_LEN);
        for f in frames {
            data.extend_from_slice(f.data_slice());
        }
        let mut new = self.state.clone();
        new.seq = new.seq.wrapping_add(1);
        new.write_counter = new.write_counter.wrapping_add(1);
        new.last_op = REQ_WRITE_DATA;
        new.last_result = ResultCode::Ok.as_u16();
        new.last_address = address;
        let journal = encode_journal(&new, address, &data);
        let rec = new.encode();
        let journal_off = self.layout.journal_offset;
        let data_off = self.layout.block_offset(u32::from(address));
        self.guarded("cannot write data", |d| {
            d.storage.write_at(journal_off, &journal)?;
            d.sync_if_durable()?;
            d.storage.write_at(data_off, &data)?;
            d.storage.write_at(State::slot_offset(new.seq), &rec[..])?;
            d.sync_if_durable()
        })?;
        self.state = new;
        for (i, blk) in data.chunks(BLOCK_LEN).enumerate() {
            let nonzero = blk != ZERO_BLOCK.as_slice();
            if let Some(u) = self.used.get_mut(usize::from(address) + i) {
                if *u != nonzero {
                    *u = nonzero;
                    if nonzero {
                        self.used_count += 1;
                    } else {
                        self.used_count = self.used_count.saturating_sub(1);
                    }
                }
            }
        }
        Ok(())
    }

    /// The read phase (CMD18 of `count` frames).
    fn read_phase(&mut self, count: usize) -> Vec<Frame> {
        let pending = std::mem::replace(&mut self.pending, Pending::Nothing);
        let fail = |resp: u16, result: u16| {
            let mut f = Frame::new_request(resp);
            f.set_result(result);
            f
        };
        let mut out = match pending {
            Pending::Nothing => Vec::new(),
            Pending::Failed { resp, result } => vec![fail(resp, self.result_field(result))],
            Pending::CounterRead { nonce } => vec![self.counter_response(&nonce)],
            Pending::ResultRead => vec![self.result_response()],
            Pending::DataRead { address, nonce } => self.read_data(address, &nonce, count),
        };
        // A read with nothing (more) to return: general failure frames.
        while out.len() < count {
            out.push(fail(0, ResultCode::GeneralFailure.as_u16()));
        }
        out.truncate(count);
        out
    }

    fn counter_response(&self, nonce: &[u8; NONCE_LEN]) -> Frame {
        let mut f = Frame::new_request(RESP_READ_COUNTER);
        f.set_nonce(nonce);
        if self.state.key_programmed {
            f.set_write_counter(self.state.write_counter);
            f.set_result(self.result_field(ResultCode::Ok));
            let mac = frame_mac(&self.state.key, std::slice::from_ref(&f));
            f.set_key_mac(&mac);
        } else {
            f.set_result(ResultCode::KeyNotProgrammed.as_u16());
        }
        f
    }

    fn result_response(&self) -> Frame {
        let reg = self.result_reg;
        match reg.op {
            REQ_PROGRAM_KEY => {
                let mut f = Frame::new_request(RESP_PROGRAM_KEY);
                f.set_result(reg.result.as_u16());
                f
            }
            REQ_WRITE_DATA => {
                let mut f = Frame::new_request(RESP_WRITE_DATA);
                f.set_result(self.result_field(reg.result));
                f.set_address(reg.address);
                if self.state.key_programmed {
                    f.set_write_counter(self.state.write_counter);
                    let mac = frame_mac(&self.state.key, std::slice::from_ref(&f));
                    f.set_key_mac(&mac);
                }
                f
            }
            _ => {
                let mut f = Frame::zeroed();
                f.set_result(ResultCode::GeneralFailure.as_u16());
                f
            }
        }
    }

    fn read_data(&mut self, address: u16, nonce: &[u8; NONCE_LEN], count: usize) -> Vec<Frame> {
        let count = count.clamp(1, usize::from(u16::MAX));
        let mut frames = vec![Frame::new_request(RESP_READ_DATA); count];
        let code = if !self.state.key_programmed {
            ResultCode::KeyNotProgrammed
        } else if u32::from(address) as usize + count > self.layout.capacity_blocks as usize {
            ResultCode::AddressFailure
        } else {
            let mut buf = vec![0u8; count * BLOCK_LEN];
            let off = self.layout.block_offset(u32::from(address));
            match self.storage.read_at(off, &mut buf) {
                Ok(()) => {
                    for (f, blk) in frames.iter_mut().zip(buf.chunks(BLOCK_LEN)) {
                        if let Ok(b) = <&[u8; BLOCK_LEN]>::try_from(blk) {
                            f.set_data(b);
                        }
                    }
                    ResultCode::Ok
                }
                Err(_) => ResultCode::ReadFailure,
            }
        };
        let result = if code == ResultCode::KeyNotProgrammed {
            code.as_u16()
        } else {
            self.result_field(code)
        };
        for f in frames.iter_mut() {
            if code != ResultCode::Ok {
                f.set_data(&[0u8; BLOCK_LEN]);
            }
            f.set_nonce(nonce);
            f.set_address(address);
            f.set_block_count(count as u16);
            f.set_result(result);
        }
        if self.state.key_programmed {
            let mac = frame_mac(&self.state.key, &frames);
            if let Some(last) = frames.last_mut() {
                last.set_key_mac(&mac);
            }
        }
        frames
    }
}
