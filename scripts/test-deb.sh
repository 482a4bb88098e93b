#!/usr/bin/env bash
# The .deb as a user gets it: built with a pinned cargo-deb, every maintainer script
# parsed by dash, installed with dpkg on THIS machine, checked against what
# docs/packaging.md promises, upgraded over itself with an edited config, removed and
# purged. scripts/test.sh runs it after the cargo tests; it needs root (or sudo) and
# dpkg. Every check prints a line; a step that cannot run fails the script, none is
# skipped.
#
# It changes the system: it refuses to run where a mesura package, user, group,
# /etc/mesura or /var/lib/mesura already exists (it would not tell yours from its
# own), and on any exit purges the package and removes what it created.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
TOOLS="$PWD/target/tools"
OUT="$PWD/target/deb-test"
UNIT_DIR=/usr/lib/systemd/system
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

step() { printf '== deb: %s (%ss)\n' "$*" "$SECONDS"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf 'FAILED (deb): %s\n' "$*" >&2; exit 1; }
indent() { sed 's/^/   | /'; }

# stat_is <path> <owner:group> <octal mode> <file type as stat names it>
stat_is() {
  local got
  got=$($SUDO stat -c '%U:%G %a %F' "$1" 2>/dev/null) || fail "$1 does not exist"
  [ "$got" = "$2 $3 $4" ] || fail "$1 is '$got', expected '$2 $3 $4'"
  ok "$1 $2 $3 ($4)"
}
absent() {
  $SUDO test -e "$1" -o -L "$1" && fail "$1 still exists"
  ok "$1 is gone"
}
pkg_status() { dpkg-query -W -f='${Status} ${Version}' mesura 2>/dev/null || true; }
has_user() { getent passwd mesura >/dev/null; }
has_group() { getent group "$1" >/dev/null; }

install_cargo_deb() {
  if [ "$("$TOOLS/bin/cargo-deb" --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "   installing cargo-deb $CARGO_DEB_VERSION into $TOOLS"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --root "$TOOLS" \
      || fail "cargo install cargo-deb $CARGO_DEB_VERSION"
  fi
}
# The release profile, the binary users get: a profile without LTO was measured no
# cheaper to build (docs/packaging.md).
DEB1="$OUT/mesura-1.deb"
DEB2="$OUT/mesura-2.deb"
build_debs() {
  rm -rf "$OUT" && mkdir -p "$OUT"
  PATH="$TOOLS/bin:$PATH" cargo deb --locked --fast --deb-revision 1 -o "$DEB1" \
    || fail "cargo deb"
  PATH="$TOOLS/bin:$PATH" cargo deb --locked --fast --deb-revision 2 --no-build -o "$DEB2" \
    || fail "cargo deb (revision 2)"
}

# `--build-only`: cargo-deb and the release build, nothing installed or checked.
# scripts/test.sh runs it early, in the background at low priority, so that this
# test proper finds both done (its own `cargo deb` then only packages).
if [ "${1:-}" = "--build-only" ]; then
  step "cargo-deb $CARGO_DEB_VERSION and the release build, in advance"
  install_cargo_deb
  build_debs
  step "built"
  exit 0
fi

step "preconditions"
[ -z "$SUDO" ] || command -v sudo >/dev/null || fail "not root and no sudo: dpkg -i needs root"
for tool in dpkg dpkg-deb dpkg-query dash runuser adduser deluser getent flock cargo; do
  { command -v "$tool" || [ -x "/usr/sbin/$tool" ]; } >/dev/null 2>&1 \
    || fail "$tool is missing (this test needs a Debian-like system with dpkg)"
done
# Two suites on one machine would install the same package: the second one waits.
# Read-only, so that a lock file root made does not stop a sudo run, nor the reverse.
lock=/tmp/mesura-test-deb.lock
[ -e "$lock" ] || (umask 0 && : >"$lock")
exec 9<"$lock"
flock -w 1800 9 || fail "another scripts/test-deb.sh held the lock for 30 minutes"
[ -z "$(pkg_status)" ] || fail "a mesura package is known to dpkg here ($(pkg_status)); this test will not touch it (a leftover of a killed run: dpkg --purge mesura)"
has_user && fail "a user mesura exists; this test creates and deletes its own"
has_group mesura && fail "a group mesura exists; this test creates and deletes its own"
for path in /etc/mesura /var/lib/mesura "$UNIT_DIR/mesura.service"; do
  $SUDO test -e "$path" && fail "$path exists; this test creates and deletes its own"
done
I2C_EXISTED=""; has_group i2c && I2C_EXISTED=1
ok "no mesura package, user, group or directories here; i2c group $([ -n "$I2C_EXISTED" ] && echo exists || echo absent)"

# From here on everything mesura on this machine is ours: undo it whatever happens.
cleanup() {
  local status=$?
  if [ -n "$(pkg_status)" ]; then
    $SUDO dpkg --purge mesura >/dev/null 2>&1 \
      || $SUDO dpkg --purge --force-remove-reinstreq mesura >/dev/null 2>&1 || true
  fi
  if has_user; then $SUDO deluser --system mesura >/dev/null 2>&1 || $SUDO userdel mesura || true; fi
  if has_group mesura; then $SUDO groupdel mesura || true; fi
  if [ -z "$I2C_EXISTED" ] && has_group i2c; then $SUDO groupdel i2c || true; fi
  $SUDO rm -rf /etc/mesura /var/lib/mesura /etc/systemd/system/mesura.service \
    /etc/systemd/system/multi-user.target.wants/mesura.service \
    /var/lib/systemd/deb-systemd-helper-enabled/mesura.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/mesura.service \
    /var/lib/systemd/deb-systemd-helper-masked/mesura.service
  [ "$status" = 0 ] || echo "FAILED (deb): see above; the package and its user are purged again" >&2
  exit "$status"
}
trap cleanup EXIT

step "cargo-deb $CARGO_DEB_VERSION"
install_cargo_deb
ok "$("$TOOLS/bin/cargo-deb" --version)"
step "build the .deb (release profile) and an upgrade of it (revision 2)"
build_debs
ok "$(du -h "$DEB1" | cut -f1) $DEB1"

step "maintainer scripts of the package"
dpkg-deb -e "$DEB1" "$OUT/control"
grep -qx /etc/mesura/config.yaml "$OUT/control/conffiles" || fail "/etc/mesura/config.yaml is not a conffile"
ok "conffiles: $(tr '\n' ' ' <"$OUT/control/conffiles")"
for script in preinst postinst prerm postrm config; do
  file="$OUT/control/$script"
  [ -e "$file" ] || continue
  [ "$(head -c 9 "$file")" = "#!/bin/sh" ] || fail "$script does not start with #!/bin/sh"
  [ -x "$file" ] || fail "$script is not executable"
  grep -q '#DEBHELPER#' "$file" && fail "$script still holds a #DEBHELPER# marker"
  dash -n "$file" 2>"$OUT/dash.err" || fail "$script does not parse under dash: $(cat "$OUT/dash.err")"
  ok "$script parses under dash"
done
for script in postinst prerm postrm; do
  [ -e "$OUT/control/$script" ] || fail "the package has no $script"
done
grep -q 'deb-systemd-helper enable mesura.service' "$OUT/control/postinst" \
  || fail "postinst lacks cargo-deb's systemd snippet"
ok "postinst holds the systemd snippet (deb-systemd-helper enable mesura.service)"

step "install: dpkg -i"
if [ -d /run/systemd/system ]; then
  echo "   systemd runs here: the snippet starts mesura.service for real"
else
  echo "   no running systemd here: the snippet enables the unit and starts nothing"
fi
$SUDO dpkg -i "$DEB1" </dev/null >"$OUT/install.log" 2>&1 || { indent <"$OUT/install.log"; fail "dpkg -i"; }
[ "$(pkg_status)" = "install ok installed 0.1.0-1" ] || fail "after dpkg -i: '$(pkg_status)'"
ok "dpkg: $(pkg_status)"

step "what docs/packaging.md promises"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd mesura) || fail "no user mesura"
[ "$uid" -lt 1000 ] || fail "mesura has uid $uid: not a system user"
[ "$home" = /var/lib/mesura ] || fail "mesura's home is $home"
case "$shell" in */nologin | /bin/false) ;; *) fail "mesura can log in (shell $shell)" ;; esac
[ "$(getent group "$gid" | cut -d: -f1)" = mesura ] || fail "mesura's primary group is not mesura"
ok "system user mesura (uid $uid, home $home, shell $shell, group mesura)"
for group in dialout i2c; do
  id -nG mesura | tr ' ' '\n' | grep -x "$group" >/dev/null || fail "mesura is not in $group"
  ok "mesura is in $group"
done
stat_is /usr/bin/mesura root:root 755 "regular file"
stat_is "$UNIT_DIR/mesura.service" root:root 644 "regular file"
cmp -s systemd/mesura.service "$UNIT_DIR/mesura.service" || fail "the installed unit differs from systemd/mesura.service"
ok "the unit is systemd/mesura.service"
wants=/etc/systemd/system/multi-user.target.wants/mesura.service
[ "$($SUDO readlink -f "$wants")" = "$(readlink -f "$UNIT_DIR/mesura.service")" ] || fail "$wants does not enable the unit"
ok "enabled: $wants"
stat_is /etc/mesura root:mesura 750 directory
stat_is /etc/mesura/config.d root:mesura 750 directory
stat_is /etc/mesura/config.yaml root:mesura 640 "regular file"
$SUDO cmp -s packaging/config.yaml /etc/mesura/config.yaml || fail "/etc/mesura/config.yaml is not packaging/config.yaml"
stat_is /etc/mesura/config.d/README root:root 644 "regular file"
stat_is /var/lib/mesura mesura:mesura 700 directory
for pattern in "examples/*.yaml" "grafana/dashboards/*.json" "docs/*.md"; do
  count=$(find /usr/share/doc/mesura -path "/usr/share/doc/mesura/$pattern" | wc -l)
  [ "$count" -gt 0 ] || fail "no /usr/share/doc/mesura/$pattern"
  ok "$count× /usr/share/doc/mesura/$pattern"
done
$SUDO runuser -u nobody -- cat /etc/mesura/config.yaml >/dev/null 2>&1 && fail "user nobody can read /etc/mesura/config.yaml"
ok "user nobody cannot read /etc/mesura/config.yaml"

# The unit's own ExecStartPre, as its User= with its Environment=, from /.
check_as_the_unit() {
  local pre env
  pre=$(sed -n 's/^ExecStartPre=//p' "$UNIT_DIR/mesura.service")
  env=$(sed -n 's/^Environment=//p' "$UNIT_DIR/mesura.service")
  [ -n "$pre" ] || fail "the unit has no ExecStartPre"
  # shellcheck disable=SC2086 # the unit's command line, split as systemd splits it
  (cd / && $SUDO runuser -u mesura -- env $env $pre) >"$OUT/check.log" 2>&1 \
    || { indent <"$OUT/check.log"; fail "as mesura: $pre"; }
  ok "as mesura: $env $pre"
}
check_as_the_unit
indent <"$OUT/check.log"
$SUDO runuser -u mesura -- sh -c 'echo data >/var/lib/mesura/test-deb.data' || fail "mesura cannot write /var/lib/mesura"
ok "mesura writes /var/lib/mesura (test-deb.data stands for the database)"

step "upgrade over itself (0.1.0-1 → 0.1.0-2) with an edited config.yaml"
edit="# edited by scripts/test-deb.sh"
printf '%s\n' "$edit" | $SUDO tee -a /etc/mesura/config.yaml >/dev/null
# stdin is /dev/null: a conffile question would fail dpkg instead of waiting.
$SUDO dpkg -i "$DEB2" </dev/null >"$OUT/upgrade.log" 2>&1 || { indent <"$OUT/upgrade.log"; fail "dpkg -i (upgrade)"; }
[ "$(pkg_status)" = "install ok installed 0.1.0-2" ] || fail "after the upgrade: '$(pkg_status)'"
ok "dpkg: $(pkg_status), no question asked"
$SUDO grep -qx "$edit" /etc/mesura/config.yaml || fail "the upgrade lost the edit of /etc/mesura/config.yaml"
ok "the edit of /etc/mesura/config.yaml survived"
for suffix in dpkg-dist dpkg-new dpkg-old; do absent "/etc/mesura/config.yaml.$suffix"; done
stat_is /etc/mesura/config.yaml root:mesura 640 "regular file"
stat_is /var/lib/mesura mesura:mesura 700 directory
$SUDO test -f /var/lib/mesura/test-deb.data || fail "the upgrade lost /var/lib/mesura/test-deb.data"
ok "/var/lib/mesura/test-deb.data kept"
check_as_the_unit

step "remove: dpkg -r keeps the config, the data and the user"
$SUDO dpkg -r mesura </dev/null >"$OUT/remove.log" 2>&1 || { indent <"$OUT/remove.log"; fail "dpkg -r"; }
[ "$(pkg_status)" = "deinstall ok config-files 0.1.0-2" ] || fail "after dpkg -r: '$(pkg_status)'"
ok "dpkg: $(pkg_status)"
absent /usr/bin/mesura
has_user || fail "dpkg -r deleted the user mesura"
ok "user mesura kept"
$SUDO test -f /var/lib/mesura/test-deb.data || fail "dpkg -r deleted /var/lib/mesura"
ok "/var/lib/mesura kept"
$SUDO grep -qx "$edit" /etc/mesura/config.yaml || fail "dpkg -r lost /etc/mesura/config.yaml"
ok "/etc/mesura/config.yaml kept"

step "purge: dpkg --purge removes everything"
$SUDO dpkg --purge mesura </dev/null >"$OUT/purge.log" 2>&1 || { indent <"$OUT/purge.log"; fail "dpkg --purge"; }
[ -z "$(pkg_status)" ] || fail "after dpkg --purge: '$(pkg_status)'"
ok "dpkg knows no mesura"
has_user && fail "the user mesura is still there"
ok "user mesura deleted"
has_group mesura && fail "the group mesura is still there"
ok "group mesura deleted"
absent /var/lib/mesura
absent /etc/mesura
absent "$UNIT_DIR/mesura.service"
absent "$wants"
absent /etc/systemd/system/mesura.service
leftovers=$($SUDO find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name 'mesura*' 2>/dev/null || true)
[ -z "$leftovers" ] || fail "deb-systemd-helper state left: $leftovers"
ok "no deb-systemd-helper state left"
has_group i2c && ok "the i2c group stays (other software uses it too)"

step "passed"
