//! RSA-OAEP key transport through OpenSSL's C API, which `CMS_encrypt` cannot select:
//! the EnvelopedData is built with `CMS_PARTIAL`, each RSA recipient's key-transport
//! context is switched to OAEP (SHA-256, MGF1-SHA-256), then `CMS_final` encrypts. EC
//! recipients are added the same way and use ECDH as usual.
//!
//! Its one job: that FFI sequence, and the only `unsafe` of S/MIME besides the key
//! cleansing in `envelope`. It never keeps a pointer beyond the call: every OpenSSL
//! object it creates is freed by [`Guard`] on every path, and every `unsafe` block says
//! why its pointers are valid.

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::Id;
use openssl::stack::StackRef;
use openssl::symm::Cipher;
use openssl::x509::X509;
use std::os::raw::{c_int, c_uchar, c_uint, c_void};

const CMS_BINARY: c_uint = 0x80;
const CMS_PARTIAL: c_uint = 0x4000;
const CMS_KEY_PARAM: c_uint = 0x40000;
const RSA_PKCS1_OAEP_PADDING: c_int = 4;

extern "C" {
    fn BIO_new_mem_buf(buf: *const c_void, len: c_int) -> *mut c_void;
    fn BIO_free(b: *mut c_void) -> c_int;
    fn CMS_encrypt(
        certs: *mut c_void,
        data: *mut c_void,
        cipher: *const c_void,
        flags: c_uint,
    ) -> *mut c_void;
    fn CMS_add1_recipient_cert(cms: *mut c_void, recip: *mut c_void, flags: c_uint) -> *mut c_void;
    fn CMS_RecipientInfo_get0_pkey_ctx(ri: *mut c_void) -> *mut c_void;
    fn EVP_PKEY_CTX_set_rsa_padding(ctx: *mut c_void, pad: c_int) -> c_int;
    fn EVP_PKEY_CTX_set_rsa_oaep_md(ctx: *mut c_void, md: *const c_void) -> c_int;
    fn EVP_PKEY_CTX_set_rsa_mgf1_md(ctx: *mut c_void, md: *const c_void) -> c_int;
    fn CMS_final(cms: *mut c_void, data: *mut c_void, dcont: *mut c_void, flags: c_uint) -> c_int;
    fn i2d_CMS_ContentInfo(cms: *mut c_void, out: *mut *mut c_uchar) -> c_int;
    fn CMS_ContentInfo_free(cms: *mut c_void);
}

/// Frees the CMS structure and the BIO however we leave.
struct Guard {
    cms: *mut c_void,
    bio: *mut c_void,
}
impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: both pointers are either null or owned by this guard alone.
        unsafe {
            if !self.cms.is_null() {
                CMS_ContentInfo_free(self.cms);
            }
            if !self.bio.is_null() {
                BIO_free(self.bio);
            }
        }
    }
}

pub fn encrypt(certs: &StackRef<X509>, data: &[u8], cipher: Cipher) -> Result<Vec<u8>, ErrorStack> {
    let len = c_int::try_from(data.len()).map_err(|_| ErrorStack::get())?;
    let sha256 = MessageDigest::sha256();
    // SAFETY: every pointer passed below is valid for the call: `data` outlives the
    // BIO (freed by the guard before return), the X509 pointers belong to `certs`
    // which outlives this function, and OpenSSL copies (up-refs) what it keeps.
    unsafe {
        let mut g = Guard {
            cms: std::ptr::null_mut(),
            bio: BIO_new_mem_buf(data.as_ptr().cast(), len),
        };
        if g.bio.is_null() {
            return Err(ErrorStack::get());
        }
        g.cms = CMS_encrypt(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            cipher.as_ptr().cast(),
            CMS_BINARY | CMS_PARTIAL,
        );
        if g.cms.is_null() {
            return Err(ErrorStack::get());
        }
        for cert in certs {
            let is_rsa = cert.public_key().map(|k| k.id() == Id::RSA)?;
            let flags = if is_rsa { CMS_KEY_PARAM } else { 0 };
            let ri = CMS_add1_recipient_cert(g.cms, cert.as_ptr().cast(), flags);
            if ri.is_null() {
                return Err(ErrorStack::get());
            }
            if is_rsa {
                let ctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
                if ctx.is_null()
                    || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0
                    || EVP_PKEY_CTX_set_rsa_oaep_md(ctx, sha256.as_ptr().cast()) <= 0
                    || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, sha256.as_ptr().cast()) <= 0
                {
                    return Err(ErrorStack::get());
                }
            }
        }
        if CMS_final(g.cms, g.bio, std::ptr::null_mut(), CMS_BINARY) <= 0 {
            return Err(ErrorStack::get());
        }
        let n = i2d_CMS_ContentInfo(g.cms, std::ptr::null_mut());
        let n = usize::try_from(n).map_err(|_| ErrorStack::get())?;
        if n == 0 {
            return Err(ErrorStack::get());
        }
        let mut out = vec![0u8; n];
        let mut p = out.as_mut_ptr();
        if i2d_CMS_ContentInfo(g.cms, &mut p) <= 0 {
            return Err(ErrorStack::get());
        }
        Ok(out)
    }
}
