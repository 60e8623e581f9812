//! The inflater of permessage-deflate: any bytes as a client's compressed message, and any data
//! through the hub's compressor and back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_hub::fuzzing::{deflate, inflate};

const MAX: usize = 65_536;

fuzz_target!(|input: (bool, Vec<u8>)| {
    let (as_data, bytes) = input;
    if as_data {
        // What the hub compresses inflates back to the same bytes.
        if let Some(compressed) = deflate(&bytes) {
            assert_eq!(inflate(&compressed, bytes.len()).as_deref(), Ok(&bytes[..]));
        }
    } else {
        // A client's bytes: the message, never more than the limit, or a refusal.
        if let Ok(message) = inflate(&bytes, MAX) {
            assert!(message.len() <= MAX);
        }
    }
});
