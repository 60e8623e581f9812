//! The `switchboard.v1` decoder and the broker envelope's: any text gets a frame or an error,
//! never a panic, and a decoded frame's request id is the one its error would carry.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match switchboard_protocol::decode(text) {
        Ok(frame) => {
            let _ = frame.id();
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
    if let Ok(envelope) = switchboard_protocol::Envelope::decode(text) {
        // What a node decodes, it can encode again, to the same envelope.
        let again = envelope.encode();
        assert_eq!(
            switchboard_protocol::Envelope::decode(&again).ok(),
            Some(envelope)
        );
    }
});
