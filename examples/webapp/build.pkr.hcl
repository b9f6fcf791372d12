build {
  name    = "webapp"
  sources = ["source.amazon-ebs.webapp"]

  provisioner "shell" {
    name = "install packages"
    inline = [
      "sudo apt-get update -qq",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq",
      "jq --version",
    ]
  }

  provisioner "file" {
    source      = "files/webapp.conf"
    destination = "/tmp/webapp.conf"
  }

  provisioner "shell" {
    name             = "configure"
    script           = "scripts/configure.sh"
    environment_vars = ["APP_VERSION=${var.app_version}"]
  }

  post-processor "manifest" {
    output     = "manifest.json"
    strip_path = true
  }
}
