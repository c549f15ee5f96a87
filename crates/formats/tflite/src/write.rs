//! Serializing a schema-level [`Model`](crate::schema::Model) to `.tflite` bytes.
//!
//! This is the seed of the TFLite exporter: the exporter builds a `schema::Model`
//! from an IR graph and calls [`finish_model`].

use crate::schema;

/// Serializes `model` as a TFLite flatbuffer with the `TFL3` file identifier.
///
/// planus 1.3's `Builder::finish(.., Some(identifier))` writes the identifier
/// *before* the root offset (`[ident][root]`), while flatbuffers puts the root
/// offset first (`[root][ident]`), and computes the offset relative to byte 4. We
/// let planus write it that way, then swap the two words and add 4 to the offset,
/// which now sits 4 bytes earlier. The round trip is tested below and by every test
/// that imports a model built here (LiteRT reads them too).
pub fn finish_model(model: &schema::Model) -> Vec<u8> {
    let mut builder = planus::Builder::new();
    let mut out = builder.finish(model, Some(*b"TFL3")).to_vec();
    let mut ident = [0u8; 4];
    ident.copy_from_slice(&out[0..4]);
    let mut root = [0u8; 4];
    root.copy_from_slice(&out[4..8]);
    let root = u32::from_le_bytes(root) + 4;
    out[0..4].copy_from_slice(&root.to_le_bytes());
    out[4..8].copy_from_slice(&ident);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use planus::ReadAsRoot;

    #[test]
    fn round_trip_keeps_identifier_and_root() {
        let model = schema::Model {
            version: 3,
            description: Some("round trip".into()),
            buffers: Some(vec![schema::Buffer::default()]),
            ..Default::default()
        };
        let bytes = finish_model(&model);
        assert_eq!(&bytes[4..8], b"TFL3");
        let back = schema::ModelRef::read_as_root(&bytes).unwrap();
        assert_eq!(back.version().unwrap(), 3);
        assert_eq!(back.description().unwrap(), Some("round trip"));
        assert_eq!(back.buffers().unwrap().unwrap().len(), 1);
    }
}
