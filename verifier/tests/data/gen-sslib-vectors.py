# Generates verifier/tests/data/sslib-vectors.json with securesystemslib 1.4.
import json
from cryptography.hazmat.primitives.asymmetric import ec, rsa, ed25519
from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, SSlibKey, Signature
msg = b'{"_type":"test","version":1}'
out = {"message": msg.decode(), "cases": []}
def add(name, priv, scheme=None):
    k = SSlibKey.from_crypto(priv.public_key(), scheme=scheme)
    if isinstance(priv, ec.EllipticCurvePrivateKey) and not isinstance(priv.curve, ec.SECP256R1):
        from cryptography.hazmat.primitives.hashes import SHA384, SHA512
        h = SHA384() if isinstance(priv.curve, ec.SECP384R1) else SHA512()
        sig = Signature(k.keyid, priv.sign(msg, ec.ECDSA(h)).hex())
    else:
        sig = CryptoSigner(priv, k).sign(msg)
    k.verify_signature(sig, msg)
    pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    out["cases"].append({"name": name, "keyid": k.keyid, "key": k.to_dict(), "sig": sig.signature, "private_pkcs8_pem": pem})
add("ed25519", ed25519.Ed25519PrivateKey.generate())
add("ecdsa-p256", ec.generate_private_key(ec.SECP256R1()))
add("ecdsa-p384", ec.generate_private_key(ec.SECP384R1()))
add("rsa-pss-2048", rsa.generate_private_key(65537, 2048))
add("rsa-pkcs1v15-3072", rsa.generate_private_key(65537, 3072), "rsa-pkcs1v15-sha256")
# 1024-bit RSA: securesystemslib verifies it; we refuse it.
add("rsa-pss-1024", rsa.generate_private_key(65537, 1024))
# P-521: a key type securesystemslib has but this verifier does not.
add("ecdsa-p521", ec.generate_private_key(ec.SECP521R1()))
print(json.dumps(out, indent=1))
