/* A peer's fingerprint, as `kith id` shows it (node/ids.py fingerprint()): 30 digits in
 * groups of five, from BLAKE2b-240 of the peer's public key with the personalization
 * "kith-fingerprnt". BLAKE2b (RFC 7693) is computed here with BigInt, one block (the
 * key is 32 bytes), since browsers have no BLAKE2. The peer id is the key in base32
 * (RFC 4648, lower case) followed by a 3-byte checksum.
 */
"use strict";

const B2B_IV = [
  0x6a09e667f3bcc908n, 0xbb67ae8584caa73bn, 0x3c6ef372fe94f82bn, 0xa54ff53a5f1d36f1n,
  0x510e527fade682d1n, 0x9b05688c2b3e6c1fn, 0x1f83d9abfb41bd6bn, 0x5be0cd19137e2179n];
const B2B_SIGMA = [
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
  [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
  [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
  [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
  [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
  [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
  [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
  [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
  [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
  [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0]];
const MASK64 = (1n << 64n) - 1n;
const FINGERPRINT_PERSON = "kith-fingerprnt";

function rotr64(x, n) {
  return ((x >> n) | (x << (64n - n))) & MASK64;
}

function wordAt(bytes, i) {
  let w = 0n;
  for (let k = 7; k >= 0; k--) w = (w << 8n) | BigInt(bytes[i + k] || 0);
  return w;
}

/* BLAKE2b of at most 128 bytes, unkeyed, with a 16-byte personalization. */
function blake2bOneBlock(data, outLen, person) {
  const h = B2B_IV.slice();
  h[0] ^= 0x01010000n ^ BigInt(outLen);
  h[6] ^= wordAt(person, 0);
  h[7] ^= wordAt(person, 8);
  const m = [];
  for (let i = 0; i < 16; i++) m.push(wordAt(data, 8 * i));
  const v = [...h, ...B2B_IV];
  v[12] ^= BigInt(data.length);
  v[14] ^= MASK64; // the last block
  const mix = (a, b, c, d, x, y) => {
    v[a] = (v[a] + v[b] + x) & MASK64; v[d] = rotr64(v[d] ^ v[a], 32n);
    v[c] = (v[c] + v[d]) & MASK64; v[b] = rotr64(v[b] ^ v[c], 24n);
    v[a] = (v[a] + v[b] + y) & MASK64; v[d] = rotr64(v[d] ^ v[a], 16n);
    v[c] = (v[c] + v[d]) & MASK64; v[b] = rotr64(v[b] ^ v[c], 63n);
  };
  for (let r = 0; r < 12; r++) {
    const s = B2B_SIGMA[r % 10];
    mix(0, 4, 8, 12, m[s[0]], m[s[1]]); mix(1, 5, 9, 13, m[s[2]], m[s[3]]);
    mix(2, 6, 10, 14, m[s[4]], m[s[5]]); mix(3, 7, 11, 15, m[s[6]], m[s[7]]);
    mix(0, 5, 10, 15, m[s[8]], m[s[9]]); mix(1, 6, 11, 12, m[s[10]], m[s[11]]);
    mix(2, 7, 8, 13, m[s[12]], m[s[13]]); mix(3, 4, 9, 14, m[s[14]], m[s[15]]);
  }
  const out = [];
  for (let i = 0; i < 8; i++) {
    let w = h[i] ^ v[i] ^ v[i + 8];
    for (let k = 0; k < 8; k++) { out.push(Number(w & 0xffn)); w >>= 8n; }
  }
  return out.slice(0, outLen);
}

function base32Decode(text) {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  const out = [];
  let bits = 0, value = 0;
  for (const ch of text.toLowerCase()) {
    const index = alphabet.indexOf(ch);
    if (index < 0) return null;
    value = (value << 5) | index; bits += 5;
    if (bits >= 8) { bits -= 8; out.push((value >> bits) & 0xff); }
  }
  return out;
}

/* "12345 67890 ..." for a 56-character peer id (null if it is not one). */
function fingerprintOf(peerId) {
  const raw = base32Decode(peerId || "");
  if (!raw || raw.length !== 35) return null;
  const person = [...FINGERPRINT_PERSON].map((c) => c.charCodeAt(0));
  const digest = blake2bOneBlock(raw.slice(0, 32), 30, person);
  const groups = [];
  for (let i = 0; i < 30; i += 5) {
    let n = 0;
    for (let k = 0; k < 5; k++) n = n * 256 + digest[i + k];
    groups.push(String(n % 100000).padStart(5, "0"));
  }
  return groups.join(" ");
}
