source "amazon-ebs" "single" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami    = "ami-785db401"
  ami_name      = "single-${uuidv4()}"
}

build {
  sources = ["source.amazon-ebs.single"]

  provisioner "shell" {
    inline = ["echo one region only"]
  }
}
