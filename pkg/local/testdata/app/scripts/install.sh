#!/bin/sh
set -eu
sudo mkdir -p "$APP_HOME"
sudo cp -r /tmp/app-files/. "$APP_HOME/"
test -f "$APP_HOME/conf.d/extra.conf"
echo "installed into $APP_HOME (password length ${#DB_PASSWORD})"
