//! The hub's WebSocket frame reader: bytes in, in any pieces, frames or a close code out.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u16>, Vec<u8>)| {
    let (cuts, bytes) = input;
    let whole = switchboard_hub::fuzzing::read_frames(&bytes, &[], 4096);
    let cut = switchboard_hub::fuzzing::read_frames(&bytes, &cuts, 4096);
    // How the bytes arrive changes nothing about what they are.
    assert_eq!(whole, cut);
    if let Some(code) = whole.close {
        assert!(matches!(code, 1002 | 1007 | 1009), "close code {code}");
    }
});
