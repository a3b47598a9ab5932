//! `polling_payload`: HTTP long-polling bodies (`ferrio_proto::engine::decode_payload` and
//! `payload_records`). Both must agree; the records stop at the first error; a body that
//! decodes re-encodes (`PayloadEncoder`) to a body that decodes to the same packets.
//!
//! Input: the request body. One that is not UTF-8 is refused before decoding, as the server
//! does.

#![no_main]

use ferrio_proto::engine::{PayloadEncoder, RECORD_SEPARATOR, decode_payload, payload_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = decode_payload(body);
    let records: Vec<_> = payload_records(body).collect();

    // The iterator yields the valid records, then at most one error, last.
    let errors = records.iter().filter(|r| r.is_err()).count();
    assert!(errors <= 1);
    if errors == 1 {
        assert!(records.last().is_some_and(Result::is_err));
    }
    let collected: Result<Vec<_>, _> = records.into_iter().collect();
    assert_eq!(collected, decoded);

    let Ok(packets) = decoded else { return };
    let separators = body.bytes().filter(|&b| b == RECORD_SEPARATOR).count();
    assert_eq!(packets.len(), separators + 1, "one packet per record");

    let mut encoder = PayloadEncoder::default();
    for packet in &packets {
        encoder.push_packet(packet);
    }
    let len = encoder.len();
    let bytes = encoder.finish();
    assert_eq!(bytes.len(), len);
    let text = String::from_utf8(bytes).expect("the encoder writes UTF-8");
    let again = decode_payload(&text).unwrap_or_else(|e| panic!("re-encoded body {text:?} fails: {e}"));
    assert_eq!(again, packets, "{text:?}");
});
