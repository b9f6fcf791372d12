#!/bin/sh
set -eu
sudo install -m 0644 /tmp/files/app.conf /etc/app.conf
