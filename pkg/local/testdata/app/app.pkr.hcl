variable "greeting" {
  type    = string
  default = "hello"
}

variable "db_password" {
  type      = string
  default   = "s3cr3t-Pa55word"
  sensitive = true
}

source "amazon-ebs" "app" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami_filter {
    filters = {
      name = "ubuntu/images/*ubuntu-xenial-16.04-amd64-server-*"
    }
    owners      = ["099720109477"]
    most_recent = true
  }
  ami_name      = "app-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  ami_regions   = ["us-west-2", "eu-west-1"]
  ami_users     = ["210987654321"]
  tags          = { Team = "platform" }
  snapshot_tags = { Backup = "no" }
}

build {
  sources = ["source.amazon-ebs.app"]

  provisioner "shell" {
    inline = [
      "echo \"${var.greeting} from $(id -un)\"",
      "echo configured-with-$DB_PASSWORD_SET",
      "sudo mkdir -p /etc/app && echo ${var.greeting} | sudo tee /etc/app/greeting >/dev/null",
    ]
    environment_vars = ["DB_PASSWORD_SET=yes"]
  }

  provisioner "file" {
    source      = "files/"
    destination = "/tmp/app-files"
  }

  provisioner "shell" {
    script           = "scripts/install.sh"
    environment_vars = ["APP_HOME=/opt/app", "DB_PASSWORD=${var.db_password}"]
  }

  post-processor "manifest" {
    output = "manifest.json"
  }
}
