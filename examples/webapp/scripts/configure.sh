#!/bin/sh
set -eu
echo "configuring webapp ${APP_VERSION}"
sudo install -d -m 0755 /etc/webapp
sudo install -m 0644 /tmp/webapp.conf /etc/webapp/webapp.conf
echo "${APP_VERSION}" | sudo tee /etc/webapp/VERSION >/dev/null
echo "webapp ${APP_VERSION} configured"
