#!/bin/sh
echo user data
