# A recipe bundle for provision_sshd_test.go: the template itself is not
# read there, only the files its provisioners upload.
