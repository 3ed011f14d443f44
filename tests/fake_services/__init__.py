"""Local fakes of the remote generation services, each speaking its documented HTTP protocol on 127.0.0.1."""
