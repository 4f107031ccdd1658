//! SDK-HMAC-SHA256 request signing (temporary stub; replaced by the signer work).
use crate::secret::Secret;
pub struct SigningRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}
#[derive(Debug)]
pub struct SignError;
pub fn sign(_req: &SigningRequest, _ak: &str, _sk: &Secret) -> Result<String, SignError> {
    Err(SignError)
}
pub fn format_sdk_date(_t: std::time::SystemTime) -> String {
    String::new()
}
