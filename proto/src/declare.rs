//! The macros that turn the two tables in `lib.rs` (status codes, operations)
//! into types and codec arms, so that each code, number and name is written
//! exactly once.
//!
//! In the operation table a body in parentheses, `(T)`, is carried by the
//! enum variant (`Request::Seal(SealRequest)`) and postcard-encoded on the
//! wire; a bare request name is a generated unit struct for [`crate::Call`]
//! whose variant has no body (`Request::Ping`), and `()` as a response means
//! no body at all (`Response::BootDone`). The helper macros below expand to
//! one of two shapes depending on whether such a body type was given.

/// The status codes: the enum and its `ALL`, `from_u16`, `name`,
/// `from_name` and `message`, from one line per code.
macro_rules! status_table {
    (
        $(
            $(#[$doc:meta])*
            $variant:ident = $code:literal, $name:literal, $message:expr;
        )*
    ) => {
        /// Stable status codes carried in every response. Numbers never change
        /// meaning; new codes are only ever appended.
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Status {
            $( $(#[$doc])* $variant = $code, )*
        }

        impl Status {
            /// Every status, in numeric order.
            pub const ALL: [Status; <[&str]>::len(&[$($name),*])] = [$(Status::$variant),*];

            /// The status with this number, if there is one.
            pub const fn from_u16(v: u16) -> Option<Status> {
                match v {
                    $( $code => Some(Status::$variant), )*
                    _ => None,
                }
            }

            /// The stable snake_case name, as the daemon's wire protocol and
            /// audit lines carry it (`"ok"`, `"blob_rejected"`, ...).
            pub const fn name(self) -> &'static str {
                match self {
                    $( Status::$variant => $name, )*
                }
            }

            /// The status with this [`Status::name`], if there is one.
            pub fn from_name(name: &str) -> Option<Status> {
                match name {
                    $( $name => Some(Status::$variant), )*
                    _ => None,
                }
            }

            /// One line for a person; never contains request data.
            pub const fn message(self) -> &'static str {
                match self {
                    $( Status::$variant => $message, )*
                }
            }
        }
    };
}

/// The operations: `Opcode`, `Request`, `Response`, the unit structs of the
/// body-less requests, the [`crate::Call`] impls and the body codec of both
/// enums, from one line per operation.
macro_rules! operation_table {
    (
        $(
            $(#[$doc:meta])*
            $op:ident = $code:literal, $name:literal
                => $( $req_unit:ident )? $( ( $req_body:ident ) )?
                -> ( $( $resp_body:ident )? );
        )*
    ) => {
        /// Operation numbers, grouped by subsystem in the high byte:
        /// `0x00` service, `0x01` lifecycle, `0x02` sealing, `0x03` device identity,
        /// `0x04` recovery.
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Opcode {
            $( $(#[$doc])* $op = $code, )*
        }

        impl Opcode {
            /// Every opcode, in numeric order.
            pub const ALL: [Opcode; <[&str]>::len(&[$($name),*])] = [$(Opcode::$op),*];

            /// The opcode with this number, if there is one.
            pub const fn from_u16(v: u16) -> Option<Opcode> {
                match v {
                    $( $code => Some(Opcode::$op), )*
                    _ => None,
                }
            }

            /// A stable lower-case name, for logs and audit lines.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Opcode::$op => $name, )*
                }
            }
        }

        $($(
            #[doc = concat!("`", $name, "` request: it has no body on the wire.")]
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
            pub struct $req_unit;
        )?)*

        /// A decoded request.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Request {
            $(
                #[doc = concat!("`", $name, "`")]
                $op $( ($req_body) )?,
            )*
        }

        impl Request {
            /// The opcode of this request.
            pub fn opcode(&self) -> Opcode {
                match self {
                    $( Request::$op { .. } => Opcode::$op, )*
                }
            }

            /// Encode the body into `out`; returns its length.
            fn put_body(&self, out: &mut [u8]) -> Result<usize, WireError> {
                Ok(match self {
                    $(
                        variant_pattern!(Request::$op, b $(, $req_body)?) =>
                            put_body!(b, out $(, $req_body)?),
                    )*
                })
            }

            /// Decode the body of a request with opcode `op`.
            fn take_body(op: Opcode, body: &[u8]) -> Result<Request, WireError> {
                Ok(match op {
                    $( Opcode::$op => take_variant!(Request::$op, body $(, $req_body)?), )*
                })
            }
        }

        /// A decoded successful response.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Response {
            $(
                #[doc = concat!("`", $name, "`")]
                $op $( ($resp_body) )?,
            )*
        }

        impl Response {
            /// The opcode this response answers.
            pub fn opcode(&self) -> Opcode {
                match self {
                    $( Response::$op { .. } => Opcode::$op, )*
                }
            }

            /// Encode the body into `out`; returns its length.
            fn put_body(&self, out: &mut [u8]) -> Result<usize, WireError> {
                Ok(match self {
                    $(
                        variant_pattern!(Response::$op, b $(, $resp_body)?) =>
                            put_body!(b, out $(, $resp_body)?),
                    )*
                })
            }

            /// Decode the body of a successful response to `op`.
            fn take_body(op: Opcode, body: &[u8]) -> Result<Response, WireError> {
                Ok(match op {
                    $( Opcode::$op => take_variant!(Response::$op, body $(, $resp_body)?), )*
                })
            }
        }

        $(
            impl Call for $($req_unit)? $($req_body)? {
                const OPCODE: Opcode = Opcode::$op;
                type Response = body_type!($($resp_body)?);

                fn into_request(self) -> Request {
                    variant_value!(Request::$op, self $(, $req_body)?)
                }

                fn from_response(r: Response) -> Result<Self::Response, WireError> {
                    match r {
                        variant_pattern!(Response::$op, b $(, $resp_body)?) =>
                            Ok(body_value!(b $(, $resp_body)?)),
                        _ => Err(WireError::OpcodeMismatch),
                    }
                }
            }
        )*
    };
}

/// The pattern of a variant, binding its body (if it has one) to `$b`.
macro_rules! variant_pattern {
    ($enum:ident :: $v:ident, $b:ident) => {
        $enum::$v
    };
    ($enum:ident :: $v:ident, $b:ident, $t:ty) => {
        $enum::$v($b)
    };
}

/// A variant built from a [`crate::Call`] value: the value is the body, or
/// (a unit struct) is dropped for a variant without one.
macro_rules! variant_value {
    ($enum:ident :: $v:ident, $x:expr) => {
        $enum::$v
    };
    ($enum:ident :: $v:ident, $x:expr, $t:ty) => {
        $enum::$v($x)
    };
}

/// The [`crate::Call::Response`] type: the body, or `()` without one.
macro_rules! body_type {
    () => {
        ()
    };
    ($t:ty) => {
        $t
    };
}

/// The [`crate::Call::Response`] value bound by [`variant_pattern`].
macro_rules! body_value {
    ($b:ident) => {
        ()
    };
    ($b:ident, $t:ty) => {
        $b
    };
}

/// Encode the body bound by [`variant_pattern`] into `$out`: its length, 0
/// for a variant without one.
macro_rules! put_body {
    ($b:ident, $out:ident) => {
        0
    };
    ($b:ident, $out:ident, $t:ty) => {
        put::<$t>($b, $out)?
    };
}

/// Decode a variant from `$body`: a variant without a body takes no bytes.
macro_rules! take_variant {
    ($enum:ident :: $v:ident, $body:ident) => {
        empty($body, $enum::$v)?
    };
    ($enum:ident :: $v:ident, $body:ident, $t:ty) => {
        $enum::$v(take::<$t>($body)?)
    };
}
