//! A refused request line may carry a plaintext. Whatever the decoder
//! allocates while refusing it must be wiped before it is freed: this test
//! binary's allocator looks into every block as it is freed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use teed_protocol::decode_request;

/// The plaintext, base64 in the line (`c2VjcmV0LXBsYWludGV4dC0xMjM0NTY3OA==`
/// is "secret-plaintext-12345678"); the allocator looks for this text.
const MARK: &[u8] = b"c2VjcmV0LXBsYWludGV4dC0xMjM0NTY3OA";

static WATCHING: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicUsize = AtomicUsize::new(0);

struct Inspecting;

// SAFETY: forwards every call to the system allocator; `dealloc` only reads
// the block it is handed, which is still allocated until `System.dealloc`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Inspecting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WATCHING.load(Ordering::Relaxed) && layout.size() >= MARK.len() {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if block.windows(MARK.len()).any(|w| w == MARK) {
                FOUND.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Inspecting = Inspecting;

#[test]
fn refused_lines_leave_no_plaintext_in_freed_memory() {
    let m = std::str::from_utf8(MARK).unwrap();
    let lines = [
        // Refused by the strict decoder, then explained by `classify`.
        format!(r#"{{"v":1,"op":"seal","namespace":"ha/x","plaintext":"{m}==","x":1}}"#),
        format!(
            r#"{{"v":1,"op":"seal","namespace":"ha/x","plaintext":"{m}==","plaintext":"{m}=="}}"#
        ),
        format!(r#"{{"v":1,"op":"seal","plaintext":"{m}==","namespace":7}}"#),
        format!(r#"{{"v":2,"op":"seal","namespace":"ha/x","plaintext":"{m}=="}}"#),
        format!(r#"{{"op":"seal","namespace":"ha/x","plaintext":"{m}=="}}"#),
        format!(r#"{{"v":1,"namespace":"ha/x","plaintext":"{m}=="}}"#),
        format!(r#"{{"v":1,"op":"seal","namespace":"ha/x","plaintext":["{m}=="]}}"#),
        // Refused after decoding.
        format!(r#"{{"v":1,"op":"seal","namespace":"Bad","plaintext":"{m}=="}}"#),
        format!(r#"{{"v":1,"op":"status","plaintext":"{m}=="}}"#),
    ];
    for line in &lines {
        WATCHING.store(true, Ordering::SeqCst);
        let refused = decode_request(line.as_bytes()).is_err();
        WATCHING.store(false, Ordering::SeqCst);
        assert!(refused, "{line}");
        assert_eq!(
            FOUND.swap(0, Ordering::SeqCst),
            0,
            "a freed block still held the plaintext after refusing {line}"
        );
    }
}
