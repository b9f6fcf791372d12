#!/bin/sh
set -eu
echo setup
