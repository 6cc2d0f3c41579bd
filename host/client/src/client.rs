//! A typed client for the key engine over any transport that carries
//! encoded protocol messages (the in-process simulator, libteec, the daemon).

use hakeys_proto::{
    self as proto, AttestRequest, EpochResponse, InitResponse, Request, Response, RetireRequest,
    RewrapRequest, SealRequest, Status, StatusResponse, UnsealRequest, UnsealResponse, WireError,
};
use zeroize::Zeroize;

/// Carries one encoded request to the engine and its encoded response back.
pub trait Transport {
    /// Send `request`; write the response into `response` (at least
    /// [`proto::MAX_MESSAGE_LEN`] bytes) and return its length.
    fn call(&mut self, request: &[u8], response: &mut [u8]) -> Result<usize, TransportError>;
}

/// The transport failed before an answer came back.
#[derive(Debug)]
pub struct TransportError {
    /// What failed, for a person; never contains request data.
    pub message: String,
    /// Whether retrying later may succeed (TA or daemon restarting, busy).
    pub retryable: bool,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The engine answered with an error status.
    Status(Status),
    /// The engine could not be reached.
    Transport(TransportError),
    /// The answer was not a valid response to the request.
    Protocol(WireError),
    /// The request could not be built (a field over its bound).
    Request(&'static str),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Status(s) => f.write_str(s.message()),
            ClientError::Transport(t) => write!(f, "key engine unavailable: {t}"),
            ClientError::Protocol(e) => write!(f, "invalid response from the key engine: {e}"),
            ClientError::Request(what) => f.write_str(what),
        }
    }
}

impl ClientError {
    /// The documented exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Status(s) => crate::exit::for_status(*s),
            ClientError::Transport(_) => crate::exit::UNAVAILABLE,
            ClientError::Protocol(_) => crate::exit::INTERNAL,
            ClientError::Request(_) => crate::exit::USAGE,
        }
    }
}

/// Typed calls over a transport.
pub struct Client<T> {
    transport: T,
    buf: Box<[u8; proto::MAX_MESSAGE_LEN]>,
    out: Box<[u8; proto::MAX_MESSAGE_LEN]>,
}

impl<T> Drop for Client<T> {
    fn drop(&mut self) {
        // Requests and responses may have carried plaintext.
        self.buf.zeroize();
        self.out.zeroize();
    }
}

macro_rules! expect {
    ($resp:expr, $variant:path) => {
        match $resp {
            $variant(inner) => Ok(inner),
            _ => Err(ClientError::Protocol(WireError::OpcodeMismatch)),
        }
    };
}

impl<T: Transport> Client<T> {
    /// A client over `transport`.
    pub fn new(transport: T) -> Self {
        Client {
            transport,
            buf: Box::new([0; proto::MAX_MESSAGE_LEN]),
            out: Box::new([0; proto::MAX_MESSAGE_LEN]),
        }
    }

    /// The transport (e.g. to close or inspect it).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Send a request and decode its answer.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let n = proto::encode_request(req, &mut self.buf[..])
            .map_err(|_| ClientError::Request("request too large"))?;
        let m = self
            .transport
            .call(&self.buf[..n], &mut self.out[..])
            .map_err(ClientError::Transport)?;
        self.buf[..n].zeroize();
        let decoded = self
            .out
            .get(..m)
            .ok_or(ClientError::Protocol(WireError::TooLong))
            .and_then(|msg| {
                proto::decode_response(msg, req.opcode()).map_err(ClientError::Protocol)
            });
        self.out[..m.min(proto::MAX_MESSAGE_LEN)].zeroize();
        decoded?.map_err(ClientError::Status)
    }

    pub fn ping(&mut self) -> Result<proto::PingResponse, ClientError> {
        expect!(self.call(&Request::Ping)?, Response::Ping)
    }

    pub fn status(&mut self) -> Result<StatusResponse, ClientError> {
        expect!(self.call(&Request::Status)?, Response::Status)
    }

    pub fn init(&mut self) -> Result<InitResponse, ClientError> {
        expect!(self.call(&Request::Init)?, Response::Init)
    }

    pub fn rotate(&mut self) -> Result<EpochResponse, ClientError> {
        expect!(self.call(&Request::Rotate)?, Response::Rotate)
    }

    pub fn retire(&mut self, below: u32) -> Result<EpochResponse, ClientError> {
        expect!(
            self.call(&Request::Retire(RetireRequest { below }))?,
            Response::Retire
        )
    }

    pub fn boot_done(&mut self) -> Result<(), ClientError> {
        match self.call(&Request::BootDone)? {
            Response::BootDone => Ok(()),
            _ => Err(ClientError::Protocol(WireError::OpcodeMismatch)),
        }
    }

    /// Seal `plaintext` for `namespace`; returns the binary blob.
    pub fn seal(&mut self, namespace: &str, plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
        let namespace = proto::Namespace::try_from(namespace)
            .map_err(|_| ClientError::Status(Status::InvalidNamespace))?;
        let plaintext = proto::Secret::from_slice(plaintext)
            .map_err(|_| ClientError::Status(Status::TooLarge))?;
        let mut req = Request::Seal(SealRequest {
            namespace,
            plaintext,
        });
        let r = self.call(&req);
        if let Request::Seal(s) = &mut req {
            s.plaintext.as_mut_slice().zeroize();
        }
        Ok(expect!(r?, Response::Seal)?.blob.to_vec())
    }

    /// Open a blob; with `namespace`, only a blob of that namespace.
    pub fn unseal(
        &mut self,
        blob: &[u8],
        namespace: Option<&str>,
    ) -> Result<UnsealResponse, ClientError> {
        let blob = proto::BlobBytes::from_slice(blob)
            .map_err(|_| ClientError::Status(Status::BlobRejected))?;
        let namespace = namespace
            .map(proto::Namespace::try_from)
            .transpose()
            .map_err(|_| ClientError::Status(Status::InvalidNamespace))?;
        expect!(
            self.call(&Request::Unseal(UnsealRequest { blob, namespace }))?,
            Response::Unseal
        )
    }

    pub fn rewrap(&mut self, blob: &[u8]) -> Result<Vec<u8>, ClientError> {
        let blob = proto::BlobBytes::from_slice(blob)
            .map_err(|_| ClientError::Status(Status::BlobRejected))?;
        Ok(expect!(
            self.call(&Request::Rewrap(RewrapRequest { blob }))?,
            Response::Rewrap
        )?
        .blob
        .to_vec())
    }

    /// The device public key, uncompressed SEC1.
    pub fn pubkey(&mut self) -> Result<Vec<u8>, ClientError> {
        Ok(expect!(self.call(&Request::Pubkey)?, Response::Pubkey)?
            .sec1
            .to_vec())
    }

    pub fn attest(&mut self, challenge: &[u8]) -> Result<Vec<u8>, ClientError> {
        let challenge = heapless::Vec::from_slice(challenge)
            .map_err(|_| ClientError::Request("challenge longer than 64 bytes"))?;
        Ok(expect!(
            self.call(&Request::Attest(AttestRequest { challenge }))?,
            Response::Attest
        )?
        .evidence
        .to_vec())
    }
}
