Welcome, ${name}.
%{ for r in regions ~}
- ${r}
%{ endfor ~}
