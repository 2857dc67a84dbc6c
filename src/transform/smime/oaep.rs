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
    /// The EnvelopedData being built: null, or owned by this guard alone.
    cms: *mut c_void,
    /// A read-only memory BIO over the caller's content: null, or owned by this guard
    /// alone; it must be freed while that content is still borrowed.
    bio: *mut c_void,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.cms.is_null() {
            // SAFETY: `cms` is non-null and owned by this guard alone (no other copy is
            // freed or used after this), so it is freed exactly once.
            unsafe { CMS_ContentInfo_free(self.cms) };
        }
        if !self.bio.is_null() {
            // SAFETY: as above, for the BIO; the content it reads is borrowed by
            // `encrypt`, which owns this guard, so it is still alive here.
            unsafe { BIO_free(self.bio) };
        }
    }
}

/// Encrypts `data` to `certs` in one EnvelopedData with `cipher`, RSA recipients with
/// RSAES-OAEP (SHA-256, MGF1-SHA-256); returns its DER.
pub fn encrypt(certs: &StackRef<X509>, data: &[u8], cipher: Cipher) -> Result<Vec<u8>, ErrorStack> {
    let len = c_int::try_from(data.len()).map_err(|_| ErrorStack::get())?;
    let sha256 = MessageDigest::sha256();
    let mut g = Guard {
        cms: std::ptr::null_mut(),
        bio: std::ptr::null_mut(),
    };
    // SAFETY: `data` is valid for reads of `len` (= its length) bytes; the read-only
    // BIO borrows it and is freed by `g` before `data`'s borrow ends.
    g.bio = unsafe { BIO_new_mem_buf(data.as_ptr().cast(), len) };
    if g.bio.is_null() {
        return Err(ErrorStack::get());
    }
    // SAFETY: null certificates and data are allowed with CMS_PARTIAL (recipients are
    // added below, the content comes at CMS_final); the cipher is a static EVP_CIPHER.
    g.cms = unsafe {
        CMS_encrypt(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            cipher.as_ptr().cast(),
            CMS_BINARY | CMS_PARTIAL,
        )
    };
    if g.cms.is_null() {
        return Err(ErrorStack::get());
    }
    for cert in certs {
        let is_rsa = cert.public_key().map(|k| k.id() == Id::RSA)?;
        let flags = if is_rsa { CMS_KEY_PARAM } else { 0 };
        // SAFETY: `g.cms` is live (non-null, owned by `g`); `cert` is borrowed from
        // `certs` for the call and OpenSSL takes its own reference ("add1").
        let ri = unsafe { CMS_add1_recipient_cert(g.cms, cert.as_ptr().cast(), flags) };
        if ri.is_null() {
            return Err(ErrorStack::get());
        }
        if is_rsa {
            // SAFETY: `ri` is the non-null RecipientInfo just added, owned by `g.cms`,
            // which outlives this call; CMS_KEY_PARAM made OpenSSL create its context.
            unsafe { use_oaep(ri, &sha256)? };
        }
    }
    // SAFETY: `g.cms` and `g.bio` are live (non-null, owned by `g`); a null detached
    // content is allowed.
    if unsafe { CMS_final(g.cms, g.bio, std::ptr::null_mut(), CMS_BINARY) } <= 0 {
        return Err(ErrorStack::get());
    }
    // SAFETY: `g.cms` is live and, after CMS_final, complete.
    unsafe { to_der(g.cms) }
}

/// Switches a key-transport RecipientInfo to RSAES-OAEP with `md` for OAEP and MGF1.
///
/// # Safety
/// `ri` must be a live RSA key-transport RecipientInfo added with `CMS_KEY_PARAM`.
unsafe fn use_oaep(ri: *mut c_void, md: &MessageDigest) -> Result<(), ErrorStack> {
    // SAFETY: `ri` is live (caller's contract); the context belongs to it ("get0": not
    // ours to free).
    let ctx = unsafe { CMS_RecipientInfo_get0_pkey_ctx(ri) };
    if ctx.is_null() {
        return Err(ErrorStack::get());
    }
    // SAFETY: `ctx` is non-null and lives as long as `ri`; `md` is a static EVP_MD.
    let ok = unsafe {
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0
            && EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md.as_ptr().cast()) > 0
            && EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md.as_ptr().cast()) > 0
    };
    if ok {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// The DER encoding of a CMS ContentInfo.
///
/// # Safety
/// `cms` must be a live, complete `CMS_ContentInfo`.
unsafe fn to_der(cms: *mut c_void) -> Result<Vec<u8>, ErrorStack> {
    // SAFETY: `cms` is live (caller's contract); a null output asks for the length only.
    let n = unsafe { i2d_CMS_ContentInfo(cms, std::ptr::null_mut()) };
    let n = usize::try_from(n).map_err(|_| ErrorStack::get())?;
    if n == 0 {
        return Err(ErrorStack::get());
    }
    let mut out = vec![0u8; n];
    let mut p = out.as_mut_ptr();
    // SAFETY: `out` has room for the `n` bytes the length query reported, which is
    // what this call writes; it advances only `p`, not used afterwards.
    if unsafe { i2d_CMS_ContentInfo(cms, &mut p) } <= 0 {
        return Err(ErrorStack::get());
    }
    Ok(out)
}
