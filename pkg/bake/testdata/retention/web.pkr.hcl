# The recipe the rebuild tests decide on: its base image is the newest
# "base-linux-*" image of one owner, as source_ami_filter with most_recent
# picks it. Tests add tags (kiln:rebuild) by replacing the tags line.
source "amazon-ebs" "web" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ec2-user"

  source_ami_filter {
    filters = {
      name = "base-linux-*"
    }
    owners      = ["137112412989"]
    most_recent = true
  }

  ami_name = "web-${formatdate("YYYYMMDD-hhmmss", timestamp())}"
  tags = {
    team = "web"
  }
}

build {
  sources = ["source.amazon-ebs.web"]

  provisioner "shell" {
    inline = ["echo web"]
  }
}
