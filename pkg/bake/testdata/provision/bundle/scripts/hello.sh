#!/bin/sh
echo hello from the bundle
