source "amazon-ebs" "web" {
  region        = var.region
  instance_type = "t3.micro"
  ami_name      = "web-{{timestamp}}"
  source_ami_filter {
    filters = {
      name = "ubuntu/images/*ubuntu-noble-24.04-amd64-server-*"
    }
    owners      = ["099720109477"]
    most_recent = true
  }
  ssh_username = "ubuntu"
}

build {
  sources = ["source.amazon-ebs.web"]

  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "/tmp/files"
  }

  provisioner "shell" {
    script = "scripts/setup.sh"
  }

  provisioner "ansible" {
    playbook_file = "./ansible/playbook.yml"
  }
}
