//! Request direction: frame splitting, request header, then the body, as the broker
//! decodes them. Whatever decodes must re-encode stably (encode(decode(encode(x))) ==
//! encode(x)).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use spate_net::{decode_request_header, frame, Encoder, Message, RequestBody};

fuzz_target!(|data: &[u8]| {
    // As a byte stream: split frames with a small max size.
    let mut stream = BytesMut::from(data);
    while let Ok(Some(f)) = frame::split_frame(&mut stream, 1 << 16) {
        let _ = decode(f);
    }
    // As one frame body.
    let _ = decode(Bytes::copy_from_slice(data));
});

fn decode(mut f: Bytes) -> Option<()> {
    let h = decode_request_header(&mut f).ok()?;
    let mut e = Encoder::new();
    h.encode(&mut e, 2);
    let body = RequestBody::decode(h.request_api_key, h.request_api_version, &mut f).ok()?;
    let v = h.request_api_version;
    let mut e = Encoder::new();
    body.encode(&mut e, v);
    let first = Bytes::from(e.finish().concat());
    let again = RequestBody::decode(h.request_api_key, v, &mut first.clone())
        .expect("re-encoded request must decode");
    let mut e = Encoder::new();
    again.encode(&mut e, v);
    assert_eq!(Bytes::from(e.finish().concat()), first);
    Some(())
}
