//! Tensors in shared memory (Triton's system shared-memory extension): an input or requested
//! output names a registered region with the `shared_memory_region`, `shared_memory_byte_size`
//! and `shared_memory_offset` parameters instead of carrying data. The decoders take a
//! [`SharedMemoryReader`] that fetches such inputs; what regions exist is the server's business.

use bytes::Bytes;

use crate::tensor::element_count;
use crate::{DataType, Parameter, Parameters, ProtocolError, Tensor};

/// The parameter naming a tensor's region.
pub const REGION: &str = "shared_memory_region";
/// The parameter giving the tensor's size in the region.
pub const BYTE_SIZE: &str = "shared_memory_byte_size";
/// The parameter giving the tensor's offset in the region (default 0).
pub const OFFSET: &str = "shared_memory_offset";

/// Where a tensor lies in a registered region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMemoryRef {
    /// The region's registered name.
    pub region: String,
    /// Offset in the region, in bytes.
    pub offset: u64,
    /// Size in bytes.
    pub byte_size: u64,
}

impl SharedMemoryRef {
    /// The reference in a tensor's (or requested output's) parameters, if it has one;
    /// `tensor` names it in errors.
    pub fn from_parameters(
        tensor: &str,
        params: &Parameters,
    ) -> Result<Option<SharedMemoryRef>, ProtocolError> {
        let Some(region) = params.get(REGION) else {
            if params.contains_key(BYTE_SIZE) || params.contains_key(OFFSET) {
                return Err(ProtocolError::tensor(
                    tensor,
                    format!("'{BYTE_SIZE}' or '{OFFSET}' given without '{REGION}'"),
                ));
            }
            return Ok(None);
        };
        let region = region
            .as_str()
            .ok_or_else(|| ProtocolError::tensor(tensor, format!("'{REGION}' must be a string")))?;
        let number = |key: &str| -> Result<Option<u64>, ProtocolError> {
            params
                .get(key)
                .map(|v| {
                    v.as_u64().ok_or_else(|| {
                        ProtocolError::tensor(
                            tensor,
                            format!("'{key}' must be a non-negative integer"),
                        )
                    })
                })
                .transpose()
        };
        let byte_size = number(BYTE_SIZE)?.ok_or_else(|| {
            ProtocolError::tensor(tensor, format!("'{REGION}' needs '{BYTE_SIZE}'"))
        })?;
        Ok(Some(SharedMemoryRef {
            region: region.to_owned(),
            offset: number(OFFSET)?.unwrap_or(0),
            byte_size,
        }))
    }

    /// Checks, before anything is read, that a fixed-size datatype's `shape` needs exactly
    /// `byte_size` bytes.
    pub fn check_size(
        &self,
        tensor: &str,
        datatype: DataType,
        shape: &[u64],
    ) -> Result<(), ProtocolError> {
        let Some(size) = datatype.element_size() else {
            return Ok(());
        };
        let count = element_count(tensor, shape)?;
        let expected = count.checked_mul(size as u64);
        if expected != Some(self.byte_size) {
            return Err(ProtocolError::tensor(
                tensor,
                format!(
                    "unexpected shared memory byte size {} in region '{}': {count} {datatype} elements need {}",
                    self.byte_size,
                    self.region,
                    expected.map_or_else(|| "more than 2^64".to_owned(), |e| e.to_string()),
                ),
            ));
        }
        Ok(())
    }
}

/// Removes the shared-memory parameters from `params` (they are consumed by the server and
/// must not reach a model, or a remote server, as if they were the tensor's own).
pub fn strip_parameters(params: &mut Parameters) {
    params.remove(REGION);
    params.remove(BYTE_SIZE);
    params.remove(OFFSET);
}

/// Marks output `t` as written into shared memory at `at`: its data is dropped and its
/// parameters say where it went and how large it is, as Triton answers. For the response's
/// encoding only (the encoders write no data for it).
pub fn mark_written(t: &mut Tensor, at: &SharedMemoryRef) {
    let len = t.data.len() as u64;
    t.data = Bytes::new();
    t.parameters
        .insert(REGION.to_owned(), Parameter::String(at.region.clone()));
    t.parameters
        .insert(BYTE_SIZE.to_owned(), Parameter::Uint(len));
    if at.offset > 0 {
        t.parameters
            .insert(OFFSET.to_owned(), Parameter::Uint(at.offset));
    }
}

/// Whether output `t` was written into shared memory ([`mark_written`]).
pub fn is_written(t: &Tensor) -> bool {
    t.parameters.contains_key(REGION)
}

/// Reads inputs from registered regions.
pub trait SharedMemoryReader {
    /// The `at.byte_size` bytes of input `tensor` at `at`; an unknown region or a range past
    /// its end is an error naming them.
    fn read(&self, tensor: &str, at: &SharedMemoryRef) -> Result<Bytes, ProtocolError>;
}

/// No shared memory: every reference is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSharedMemory;

impl SharedMemoryReader for NoSharedMemory {
    fn read(&self, tensor: &str, at: &SharedMemoryRef) -> Result<Bytes, ProtocolError> {
        Err(ProtocolError::tensor(
            tensor,
            format!(
                "is in shared memory region '{}', but shared memory is not available here",
                at.region
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, Parameter)]) -> Parameters {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn references_are_read_from_parameters_and_checked() {
        let p = params(&[(REGION, "r".into()), (BYTE_SIZE, Parameter::Int(64))]);
        let r = SharedMemoryRef::from_parameters("x", &p).unwrap().unwrap();
        assert_eq!((r.region.as_str(), r.offset, r.byte_size), ("r", 0, 64));
        assert!(r.check_size("x", DataType::Fp32, &[1, 16]).is_ok());
        let e = r
            .check_size("x", DataType::Fp32, &[1, 17])
            .unwrap_err()
            .to_string();
        assert!(e.contains("68"), "{e}");
        assert!(
            SharedMemoryRef::from_parameters("x", &Parameters::new())
                .unwrap()
                .is_none()
        );
        for bad in [
            params(&[(REGION, "r".into())]),
            params(&[(REGION, Parameter::Int(1)), (BYTE_SIZE, Parameter::Int(4))]),
            params(&[(REGION, "r".into()), (BYTE_SIZE, Parameter::Int(-4))]),
            params(&[(BYTE_SIZE, Parameter::Int(4))]),
        ] {
            assert!(
                SharedMemoryRef::from_parameters("x", &bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
