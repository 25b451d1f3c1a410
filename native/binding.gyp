# node-gyp build of the nettally addon: libbpf loader + ring-buffer drain thread over the generated skeleton.
{
  "targets": [
    {
      "target_name": "nettally",
      "sources": ["addon.cc", "system.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "../build", "../bpf"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wno-missing-field-initializers"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-lbpf", "-lelf", "-lz", "-lpthread"]
    }
  ]
}
