//! The `:authority` rewriter in front of unix-socket gRPC servers: any client byte stream after
//! the preface is refused or rewritten, never panics, and what the server reads has every header
//! block decodable on its own (literals only), in frames of at most 16 KiB, with a well-formed
//! `:authority`.
#![no_main]

use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(data);
    let Ok(out) = strata_grpc::authority::rewrite_all(&input) else {
        return;
    };
    assert!(out.starts_with(PREFACE));
    let mut rest = &out[PREFACE.len()..];
    // No dynamic table entry is ever added by the rewritten blocks: one decoder reads them all.
    let mut decoder = loona_hpack::Decoder::new();
    let mut block: Option<Vec<u8>> = None;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let Some(payload) = rest.get(9..9 + len) else {
            // A frame the input ended inside of, passed through as far as it went.
            assert!(
                kind != 0x1 && kind != 0x9,
                "a partial header frame was emitted"
            );
            break;
        };
        rest = &rest[9 + len..];
        if kind != 0x1 && kind != 0x9 {
            continue;
        }
        assert!(len <= 16_384, "header frame of {len} bytes");
        let mut fragment = payload;
        if kind == 0x1 {
            assert!(block.is_none(), "HEADERS inside an open block");
            assert_eq!(flags & 0x8, 0, "padded HEADERS emitted");
            if flags & 0x20 != 0 {
                fragment = &fragment[5..];
            }
            block = Some(Vec::new());
        }
        let b = block
            .as_mut()
            .expect("CONTINUATION without HEADERS emitted");
        b.extend_from_slice(fragment);
        if flags & 0x4 != 0 {
            let b = block.take().expect("open block");
            let headers = decoder.decode(&b).expect("an emitted block decodes");
            for (name, value) in headers {
                if name == b":authority" {
                    assert!(
                        http::uri::Authority::try_from(value.as_slice()).is_ok(),
                        "emitted :authority {value:?}"
                    );
                }
            }
        }
    }
});
