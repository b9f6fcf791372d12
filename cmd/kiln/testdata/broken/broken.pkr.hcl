source "amazon-ebs" "app" {
  region        = "us-east-1"
  instance_typo = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami    = "ami-785db401"
  ami_name      = "app"
  spot_price    = "auto"
}

build {
  sources = ["source.amazon-ebs.app"]
  provisioner "shell-local" {
    inline = ["echo hi"]
  }
}
