# The recipe of the session_manager transport's moto integration tests
# (provision_ssm_moto_test.go): SSM Run Command, no ssh_username (so the
# commands run as root, the agent's user), no iam_instance_profile (so the
# stack's build instance profile applies). dest is a folder of the test's.

variable "dest" {
  type = string
}

variable "exit" {
  type    = string
  default = "0"
}

variable "token" {
  type      = string
  default   = "s3cr3t-token-value"
  sensitive = true
}

source "amazon-ebs" "app" {
  region = "eu-west-1"
  source_ami_filter {
    filters = {
      name = "ubuntu/images/hvm-ssd/ubuntu-xenial-*"
    }
    owners      = ["099720109477"]
    most_recent = true
  }
  instance_type = "t3.micro"
  ssh_interface = "session_manager"
  ami_name      = "kiln-moto-ssm"
}

build {
  sources = ["source.amazon-ebs.app"]

  provisioner "file" {
    content     = "token=${var.token}\n"
    destination = "${var.dest}/app.env"
  }

  provisioner "shell" {
    name             = "configure"
    remote_folder    = var.dest
    timeout          = "5m"
    environment_vars = ["TOKEN=${var.token}", "DEST=${var.dest}"]
    inline = [
      "echo \"placed $(wc -c < $DEST/app.env) bytes\"",
      "echo \"token is $TOKEN\"",
    ]
  }

  provisioner "shell" {
    name          = "smoke test"
    remote_folder = var.dest
    inline        = ["echo checking the service", "echo 'service did not answer' >&2", "exit ${var.exit}"]
  }
}
