// The administration page: users and service accounts, roles, predictors limited to named deployments, and tokens
// (created and shown once, revoked by id).
"use strict";

window.MlportAdmin = (() => {
  const C = window.MlportConsole;

  async function load() {
    const users = (await C.api("GET", "/api/v1/users")).users;
    C.rows(document.getElementById("users"), users, (u) => [u.name, u.kind, (u.roles || []).join(", "),
      u.deployments === null ? "all" : u.deployments.join(", "),
      u.name === document.body.dataset.user ? "" : C.el("button", { type: "button", class: "danger", text: "Delete",
        onclick: () => remove(u.name) })]);
  }

  function remove(name) {
    if (!window.confirm("Delete the account " + name + "? Its tokens stop working.")) return;
    C.api("DELETE", "/api/v1/users/" + encodeURIComponent(name)).then(() => C.notice("deleted " + name))
      .then(load).catch(C.failed);
  }

  function limited(data) {
    const deployments = C.listOf(data.deployments);
    return deployments.length ? deployments : undefined;
  }

  return { page: async () => {
    C.onSubmit("create-user", async (form) => {
      const data = C.formData(form);
      await C.api("POST", "/api/v1/users", { name: data.name, password: data.password, roles: C.listOf(data.roles),
        deployments: limited(data) });
      form.reset();
      C.notice("created user " + data.name);
      await load();
    });
    C.onSubmit("create-service", async (form) => {
      const data = C.formData(form);
      const answer = await C.api("POST", "/api/v1/service-accounts", { name: data.name,
        roles: C.listOf(data.roles || "predictor"), deployments: limited(data) });
      form.reset();
      document.getElementById("token-once").hidden = false;
      document.getElementById("token-value").value = answer.access_token;
      document.getElementById("token-jti").textContent = "token id (to revoke it): " + answer.jti;
      C.notice("created service account " + answer.name + "; copy its token now, it is not shown again");
      await load();
    });
    document.getElementById("token-copy").addEventListener("click", () => {
      const box = document.getElementById("token-value");
      box.select();
      if (navigator.clipboard) navigator.clipboard.writeText(box.value).catch(() => null);
    });
    C.onSubmit("revoke", async (form) => {
      const data = C.formData(form);
      await C.api("POST", "/api/v1/tokens/revoke", { jti: data.jti });
      form.reset();
      C.notice("revoked token " + data.jti);
    });
    await load();
  } };
})();
