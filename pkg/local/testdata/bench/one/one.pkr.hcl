# The benchmark's one-Region bake: launch, a trivial provisioner over SSH,
# stop, image. No copies.
source "amazon-ebs" "one" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami    = "ami-785db401"
  ami_name      = "bench-one-${formatdate("YYYYMMDDhhmmss", timestamp())}"
}

build {
  sources = ["source.amazon-ebs.one"]

  provisioner "shell" {
    inline = ["echo provisioned"]
  }
}
