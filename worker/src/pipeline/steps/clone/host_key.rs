//! The SSH host key a server presents, checked against `repo.known_hosts`
//! (parsed by the protocol's grammar, which owns the OpenSSH matching
//! rules, hashed hosts included). TLS certificates are left to libgit2's
//! own verification.

use super::remote::Remote;
use super::GitError;
use buildbot_protocol::grammar::{HostKey, KnownHosts};
use git2::cert::Cert;
use git2::CertificateCheckStatus;

/// libgit2's certificate check for `remote`: an SSH host key must be
/// pinned in `known_hosts` when the job gives one; anything else passes.
pub(super) fn check_certificate(
    known_hosts: Option<&KnownHosts>,
    remote: &Remote,
    cert: &Cert<'_>,
) -> Result<CertificateCheckStatus, GitError> {
    let Some(hostkey) = cert.as_hostkey() else {
        return Ok(CertificateCheckStatus::CertificatePassthrough);
    };
    let Some(known_hosts) = known_hosts else {
        return Ok(CertificateCheckStatus::CertificateOk);
    };
    let Some(blob) = hostkey.hostkey() else {
        return Err(GitError::HostKeyMismatch(format!(
            "the SSH server {} sent no host key to compare with repo.known_hosts",
            remote.host_port()
        )));
    };
    check_host_key(known_hosts, remote, blob)?;
    Ok(CertificateCheckStatus::CertificateOk)
}

/// Whether `remote` may present the key `blob` (SSH wire format).
fn check_host_key(known_hosts: &KnownHosts, remote: &Remote, blob: &[u8]) -> Result<(), GitError> {
    let Remote::Network(url) = remote else {
        // libgit2's local transport has no host key to send.
        return Err(GitError::HostKeyMismatch(format!(
            "{remote} sent an SSH host key, but is not an SSH remote"
        )));
    };
    let key = HostKey::from_blob(blob);
    known_hosts
        .check_host_key(url.host(), url.port_or_default(), &key)
        .map_err(|problem| GitError::HostKeyMismatch(problem.message(&url.host_port(), &key)))
}

#[cfg(test)]
mod tests {
    use super::super::Policy;
    use super::*;
    use buildbot_protocol::grammar::base64;

    // The grammar's tests cover the matching rules; these pin that a
    // remote's host and port reach them and the message names the server.
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIALcZyPxRyF0MWFIklWpCY/pDGoZ6I0H3CMrFSKiBTCB";
    const KEY_A_FINGERPRINT: &str = "SHA256:wlyvFlxXco4aYuzSsY34exHH3AKqig4aV3MU839pZ7Y";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIP31+oAJfDvTjXzdCFgXRX6m/UwOxmN4CYDl2RG2V2aH";
    /// `ssh-keygen -H` of `[127.0.0.1]:2222 ssh-ed25519 KEY_A`.
    const HASHED_A: &str = "|1|h82dJEUJ5ACHkKcay+Ddl9TGV08=|MeOpetghJYtPinVKCCK9J3SW2QQ= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIALcZyPxRyF0MWFIklWpCY/pDGoZ6I0H3CMrFSKiBTCB";

    fn check(known_hosts: &str, url: &str, key: &str) -> Result<(), GitError> {
        let known_hosts = KnownHosts::parse(known_hosts).unwrap();
        let remote = Remote::parse(url, Policy::JOB).unwrap();
        check_host_key(&known_hosts, &remote, &base64::decode(key).unwrap())
    }

    #[test]
    fn the_pinned_key_of_the_host_and_port_is_accepted() {
        let url = "ssh://git@127.0.0.1:2222/srv/app.git";
        let plain = format!("[127.0.0.1]:2222 ssh-ed25519 {KEY_A}");
        assert!(check(&plain, url, KEY_A).is_ok());
        assert!(check(HASHED_A, url, KEY_A).is_ok());
        let scp_like = format!("github.com ssh-ed25519 {KEY_A}");
        assert!(check(&scp_like, "git@GitHub.com:team/app.git", KEY_A).is_ok());
    }

    #[test]
    fn another_key_or_port_is_refused_naming_the_server() {
        let error = check(HASHED_A, "ssh://git@127.0.0.1:2222/x", KEY_B).unwrap_err();
        assert!(matches!(error, GitError::HostKeyMismatch(_)));
        assert!(
            error
                .to_string()
                .starts_with("the SSH host key of 127.0.0.1:2222 (ED25519 SHA256:"),
            "{error}"
        );
        let error = check(HASHED_A, "ssh://git@127.0.0.1/x", KEY_A).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the SSH host key of 127.0.0.1:22 (ED25519 {KEY_A_FINGERPRINT}) does not match \
                 repo.known_hosts: repo.known_hosts has no entry for 127.0.0.1"
            )
        );
    }
}
