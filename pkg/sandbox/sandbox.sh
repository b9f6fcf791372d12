#!/bin/sh
# sandbox.sh becomes PID 1 of fresh PID, mount, UTS and IPC namespaces
# (Start clones it so) and ends by exec'ing sshd, chrooted into an overlay of
# the host's root. Every mount below lives only in that namespace and
# vanishes with it. Inputs (all set by sandbox.go):
#
#   W          the sandbox's work dir on the host
#   KILN_USER  the login user; created with passwordless sudo unless root
#
# Layers, top to bottom, as the chroot W/root sees them:
#   W/upper    what the recipe changes (Capture tars it)
#   W/setup    what this script changes: the login user, policy-rc.d
#   /          the host's root file system, never written
# The setup layer is an overlay of its own, mounted at W/lower, so that
# W/upper holds nothing but the recipe's changes. (A plain directory cannot
# be a second lower layer: overlayfs rejects a lower layer that lies inside
# another one, and everything lies inside /.)
set -eu

mount --make-rprivate /

# Setup layer.
mount -t overlay kiln-setup -o "lowerdir=/,upperdir=$W/setup,workdir=$W/setup-work" "$W/lower"
l=$W/lower
# The sandbox shares the host's network: a package whose postinst starts
# its daemon would bind the host's ports. Deny service starts the Debian
# way (invoke-rc.d and deb-systemd-invoke honour policy-rc.d).
printf '#!/bin/sh\n# kiln sandbox: no service starts.\nexit 101\n' >"$l/usr/sbin/policy-rc.d"
chmod 0755 "$l/usr/sbin/policy-rc.d"
if [ "$KILN_USER" != root ]; then
	if ! chroot "$l" id -u "$KILN_USER" >/dev/null 2>&1; then
		shell=/bin/sh
		[ -x "$l/bin/bash" ] && shell=/bin/bash
		# Password "*": no password login, but not "locked" (sshd
		# without PAM refuses key logins to accounts whose password
		# starts with "!", useradd's default).
		chroot "$l" useradd --create-home --user-group --shell "$shell" --password '*' "$KILN_USER"
	fi
	if [ -x "$l/usr/bin/sudo" ]; then
		mkdir -p "$l/etc/sudoers.d"
		printf '%s ALL=(ALL:ALL) NOPASSWD:ALL\n' "$KILN_USER" >"$l/etc/sudoers.d/90-kiln-$KILN_USER"
		chmod 0440 "$l/etc/sudoers.d/90-kiln-$KILN_USER"
	fi
fi

# The recipe's layer. metacopy and redirect_dir stay off so that every
# change is a whole file or directory in W/upper, which is what Capture
# tars; index is off because the lower layer is itself an overlay.
mount -t overlay kiln-sandbox \
	-o "lowerdir=$l,upperdir=$W/upper,workdir=$W/upper-work,redirect_dir=off,metacopy=off,index=off" "$W/root"
r=$W/root

# Kernel file systems, and a /dev with only the harmless devices: none of
# the host's disks.
mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
# The network and the kernel are the host's: a recipe's sysctl must not
# retune them (as in Docker, /proc/sys is read-only).
for p in sys sysrq-trigger; do
	[ -e "$r/proc/$p" ] || continue # no sysrq-trigger without CONFIG_MAGIC_SYSRQ
	mount --bind "$r/proc/$p" "$r/proc/$p"
	mount -o remount,bind,ro "$r/proc/$p"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
mount -t tmpfs -o mode=0755,nosuid,size=1m kiln-dev "$r/dev"
mknod -m 0666 "$r/dev/null" c 1 3
mknod -m 0666 "$r/dev/zero" c 1 5
mknod -m 0666 "$r/dev/full" c 1 7
mknod -m 0666 "$r/dev/random" c 1 8
mknod -m 0666 "$r/dev/urandom" c 1 9
mknod -m 0666 "$r/dev/tty" c 5 0
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mkdir -m 0755 "$r/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
mkdir -m 1777 "$r/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev kiln-shm "$r/dev/shm"

# Private scratch space, which is not part of the image.
mount -t tmpfs -o mode=1777,nosuid,nodev kiln-tmp "$r/tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev kiln-run "$r/run"
mkdir -m 0755 "$r/run/sshd" "$r/run/kiln"
mkdir -m 1777 "$r/run/lock"
# sshd's config, host key, pid file and log stay on the host side, so the
# Go side can read the log and none of it lands in W/upper.
mount --bind "$W/ssh" "$r/run/kiln"

# Nor load kernel modules or set the host's clock. (Hostname and SysV IPC
# are the sandbox's own: Start gives it UTS and IPC namespaces.)
drop=
if command -v setpriv >/dev/null; then
	drop="setpriv --bounding-set -sys_module,-sys_time --"
fi
exec $drop chroot "$r" /usr/sbin/sshd -D -f /run/kiln/sshd_config -E /run/kiln/sshd.log
