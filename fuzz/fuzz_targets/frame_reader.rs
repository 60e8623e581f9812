//! The hub's WebSocket frame reader: bytes in, in any pieces, frames or a close code out.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u16>, Vec<u8>)| {
    let (cuts, bytes) = input;
    // A session without permessage-deflate, and one with it (RSV1 marks compressed messages).
    for deflate in [false, true] {
        let whole = switchboard_hub::fuzzing::read_frames(&bytes, &[], 4096, deflate);
        let cut = switchboard_hub::fuzzing::read_frames(&bytes, &cuts, 4096, deflate);
        // How the bytes arrive changes nothing about what they are.
        assert_eq!(whole, cut);
        if let Some(code) = whole.close {
            assert!(matches!(code, 1002 | 1007 | 1009), "close code {code}");
        }
    }
});
