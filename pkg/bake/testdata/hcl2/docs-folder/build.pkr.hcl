build {
  name    = "app"
  sources = ["source.amazon-ebs.app"]

  provisioner "shell" {
    environment_vars = ["APP_VERSION=${var.app_version}", "DB_PASSWORD=${var.db_password}"]
    scripts = [
      "${path.root}/scripts/install.sh",
      "./scripts/configure.sh",
    ]
  }

  post-processor "manifest" {
    output     = "manifest.json"
    strip_path = true
  }
}
