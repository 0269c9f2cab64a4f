"""Privacy machinery: secrets and key files, redaction of logs (and, as it lands, the vault,
consent, the policy engine and data-subject rights)."""
