//! A typed client for the key engine over any transport that carries
//! encoded protocol messages (the in-process simulator, libteec, the daemon).

use hakeys_proto::{
    self as proto, AttestRequest, Call, EpochResponse, EscrowRequest, InitResponse, OpenRequest,
    OpenResponse, Request, ResealRequest, RetireRequest, RewrapRequest, SealRequest, Status,
    StatusResponse, UnsealRequest, UnsealResponse, WireError,
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

impl std::error::Error for TransportError {}

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

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Transport(t) => Some(t),
            ClientError::Protocol(e) => Some(e),
            ClientError::Status(_) | ClientError::Request(_) => None,
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

    /// Send one request and decode its answer. The answer's type is the
    /// one the protocol pairs with the request ([`proto::Call`]), checked
    /// at compile time; an answer to another operation is a protocol error.
    pub fn call<C: Call>(&mut self, req: C) -> Result<C::Response, ClientError> {
        let mut request = req.into_request();
        let encoded = proto::encode_request(&request, &mut self.buf[..]);
        if let Request::Seal(s) = &mut request {
            s.plaintext.as_mut_slice().zeroize();
        }
        let n = encoded.map_err(|_| ClientError::Request("request too large"))?;
        let sent = self.transport.call(&self.buf[..n], &mut self.out[..]);
        self.buf[..n].zeroize();
        let m = sent.map_err(ClientError::Transport)?;
        let decoded = self
            .out
            .get(..m)
            .ok_or(ClientError::Protocol(WireError::TooLong))
            .and_then(|msg| proto::decode_response(msg, C::OPCODE).map_err(ClientError::Protocol));
        self.out[..m.min(proto::MAX_MESSAGE_LEN)].zeroize();
        match decoded? {
            Ok(r) => C::from_response(r).map_err(ClientError::Protocol),
            Err(status) => Err(ClientError::Status(status)),
        }
    }

    pub fn ping(&mut self) -> Result<proto::PingResponse, ClientError> {
        self.call(proto::PingRequest)
    }

    pub fn status(&mut self) -> Result<StatusResponse, ClientError> {
        self.call(proto::StatusRequest)
    }

    pub fn init(&mut self) -> Result<InitResponse, ClientError> {
        self.call(proto::InitRequest)
    }

    pub fn rotate(&mut self) -> Result<EpochResponse, ClientError> {
        self.call(proto::RotateRequest)
    }

    pub fn retire(&mut self, below: u32) -> Result<EpochResponse, ClientError> {
        self.call(RetireRequest { below })
    }

    pub fn boot_done(&mut self) -> Result<(), ClientError> {
        self.call(proto::BootDoneRequest)
    }

    /// Seal `plaintext` for `namespace`; returns the binary blob.
    pub fn seal(&mut self, namespace: &str, plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
        let namespace = namespace_of(namespace)?;
        let plaintext = proto::Secret::from_slice(plaintext)
            .map_err(|_| ClientError::Status(Status::TooLarge))?;
        // `call` wipes the plaintext once it is encoded.
        Ok(self
            .call(SealRequest {
                namespace,
                plaintext,
            })?
            .blob
            .to_vec())
    }

    /// Open a blob; with `namespace`, only a blob of that namespace.
    pub fn unseal(
        &mut self,
        blob: &[u8],
        namespace: Option<&str>,
    ) -> Result<UnsealResponse, ClientError> {
        let blob = blob_bytes(blob)?;
        let namespace = namespace.map(namespace_of).transpose()?;
        self.call(UnsealRequest { blob, namespace })
    }

    /// Open a blob and learn its kind and epoch
    /// ([`proto::BLOB_KIND_DEVICE`] or [`proto::BLOB_KIND_OFFLINE`]); with
    /// `namespace`, only a blob of that namespace; without `accept_offline`,
    /// never a blob sealed offline (the engine refuses those in `boot/`
    /// anyway).
    pub fn open(
        &mut self,
        blob: &[u8],
        namespace: Option<&str>,
        accept_offline: bool,
    ) -> Result<OpenResponse, ClientError> {
        let blob = blob_bytes(blob)?;
        let namespace = namespace.map(namespace_of).transpose()?;
        self.call(OpenRequest {
            blob,
            namespace,
            accept_offline,
        })
    }

    /// Refuse unmarked blobs sealed offline (generation 0) from now on.
    pub fn retire_unmarked(&mut self) -> Result<(), ClientError> {
        self.call(proto::RetireUnmarkedRequest)
    }

    pub fn rewrap(&mut self, blob: &[u8]) -> Result<Vec<u8>, ClientError> {
        let blob = blob_bytes(blob)?;
        Ok(self.call(RewrapRequest { blob })?.blob.to_vec())
    }

    /// Open `blob` in the engine and seal it to the device public key `to`
    /// (same namespace); `allow_boot` for a `boot/` namespace.
    pub fn reseal(
        &mut self,
        blob: &[u8],
        to: &p256::PublicKey,
        allow_boot: bool,
    ) -> Result<Vec<u8>, ClientError> {
        let blob = blob_bytes(blob)?;
        let to = heapless::Vec::from_slice(&hakeys_engine::crypto::sec1_uncompressed(to))
            .map_err(|_| ClientError::Request("public key too long"))?;
        Ok(self
            .call(ResealRequest {
                blob,
                to,
                allow_boot,
            })?
            .blob
            .to_vec())
    }

    /// The engine's escrow sealed to `recovery`; `replace` replaces an
    /// enrolled recovery key (during the boot phase only).
    pub fn escrow(
        &mut self,
        recovery: &p256::PublicKey,
        replace: bool,
    ) -> Result<Vec<u8>, ClientError> {
        let recovery_key =
            heapless::Vec::from_slice(&hakeys_engine::crypto::sec1_uncompressed(recovery))
                .map_err(|_| ClientError::Request("public key too long"))?;
        Ok(self
            .call(EscrowRequest {
                recovery_key,
                replace,
            })?
            .escrow
            .to_vec())
    }

    /// The enrolled recovery key's fingerprint, if any.
    pub fn recovery_status(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .call(proto::RecoveryStatusRequest)?
            .enrolled
            .map(|f| f.to_vec()))
    }

    /// The device public key (offline blobs are sealed to it), uncompressed
    /// SEC1.
    pub fn pubkey(&mut self) -> Result<Vec<u8>, ClientError> {
        Ok(self.call(proto::PubkeyRequest)?.sec1.to_vec())
    }

    /// The attestation public key (it signs evidence), uncompressed SEC1.
    pub fn attest_pubkey(&mut self) -> Result<Vec<u8>, ClientError> {
        Ok(self.call(proto::AttestPubkeyRequest)?.sec1.to_vec())
    }

    pub fn attest(&mut self, challenge: &[u8]) -> Result<Vec<u8>, ClientError> {
        let challenge = heapless::Vec::from_slice(challenge)
            .map_err(|_| ClientError::Request("challenge longer than 64 bytes"))?;
        Ok(self.call(AttestRequest { challenge })?.evidence.to_vec())
    }
}

/// A blob as the protocol carries it (too long: the engine would reject it).
fn blob_bytes(blob: &[u8]) -> Result<proto::BlobBytes, ClientError> {
    proto::BlobBytes::from_slice(blob).map_err(|_| ClientError::Status(Status::BlobRejected))
}

/// A namespace as the protocol carries it.
fn namespace_of(namespace: &str) -> Result<proto::Namespace, ClientError> {
    proto::Namespace::try_from(namespace).map_err(|_| ClientError::Status(Status::InvalidNamespace))
}
