# The recipe of the launch and cleanup stages' moto integration tests
# (stages_moto_test.go). Its base image is one of the Ubuntu images moto
# preloads in every Region.

variable "leak" {
  type    = string
  default = env("AWS_SECRET_ACCESS_KEY")
}

source "amazon-ebs" "app" {
  region      = "eu-west-1"
  ami_regions = ["us-east-1"]
  source_ami_filter {
    filters = {
      name = "ubuntu/images/hvm-ssd/ubuntu-xenial-*"
    }
    owners      = ["099720109477"]
    most_recent = true
  }
  instance_type   = "t3.micro"
  ssh_username    = "ubuntu"
  ami_name        = "kiln-moto-app"
  ami_description = "leak=[${var.leak}]"
  user_data       = "#!/bin/sh\necho recipe user data\n"
  run_tags = {
    team = "core"
  }
  run_volume_tags = {
    volume = "root"
  }
  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 12
    volume_type           = "gp3"
    delete_on_termination = true
  }
}

build {
  sources = ["source.amazon-ebs.app"]

  provisioner "shell" {
    inline = ["true"]
  }
}
