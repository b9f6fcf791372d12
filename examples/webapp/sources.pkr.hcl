packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

source "amazon-ebs" "webapp" {
  region        = var.region
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"

  source_ami_filter {
    filters = {
      name                = "ubuntu/images/*ubuntu-*-amd64-server-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["099720109477"]
    most_recent = true
  }

  ami_name        = "webapp-${var.app_version}-${local.stamp}"
  ami_description = "webapp ${var.app_version} on Ubuntu"
  ami_regions     = var.copy_regions
  ami_users       = var.share_with

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 12
    volume_type           = "gp3"
    delete_on_termination = true
  }

  tags = {
    Name    = "webapp"
    Version = var.app_version
  }
  run_tags = {
    Purpose = "kiln build"
  }
}
