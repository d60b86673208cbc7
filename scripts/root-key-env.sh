# Source this (GOVSHARE_HOME set and absolute): GOVSHARE_ROOT_KEY, the root key that wraps every
# stored key, kept outside GOVSHARE_HOME. Unless it is set already, a file (made 0600 by
# 'govshare init') under the user's config folder, one per home. A bureau sets its own
# (file:/path, or pkcs11:token=LABEL for an HSM).
if [[ -z "${GOVSHARE_ROOT_KEY:-}" ]]; then
  _govshare_home_id=$(printf '%s' "$GOVSHARE_HOME" | sha256sum | cut -c1-16)
  export GOVSHARE_ROOT_KEY="file:${XDG_CONFIG_HOME:-$HOME/.config}/govshare/root-$_govshare_home_id.key"
fi
