# The benchmark's five-Region bake: the one-Region bake copied to four more
# Regions at once.
source "amazon-ebs" "five" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami    = "ami-785db401"
  ami_name      = "bench-five-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  ami_regions   = ["us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"]
}

build {
  sources = ["source.amazon-ebs.five"]

  provisioner "shell" {
    inline = ["echo provisioned"]
  }
}
