using System.Collections.Frozen;
using System.Net;
using Bursar.Gateway.Endpoints;
using Bursar.Gateway.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Bursar.Gateway.Dashboard;

/// <summary>
/// <c>/dashboard</c>: the advisor's web face, served by the gateway with no external assets. Signing in with the admin key sets an
/// HttpOnly, SameSite=Strict cookie that the admin reports API accepts; the page draws its charts from <c>/admin/reports/*</c>.
/// </summary>
public static class DashboardApi
{
    private static readonly FrozenDictionary<string, (byte[] Body, string ContentType)> Assets = LoadAssets();

    private static FrozenDictionary<string, (byte[], string)> LoadAssets()
    {
        var asm = typeof(DashboardApi).Assembly;
        var map = new Dictionary<string, (byte[], string)>(StringComparer.Ordinal);
        foreach (var name in asm.GetManifestResourceNames().Where(n => n.StartsWith("Bursar.Dashboard.", StringComparison.Ordinal)))
        {
            using var s = asm.GetManifestResourceStream(name)!;
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            var file = name["Bursar.Dashboard.".Length..];
            var type = Path.GetExtension(file) switch
            {
                ".js" => "text/javascript; charset=utf-8",
                ".css" => "text/css; charset=utf-8",
                _ => "text/html; charset=utf-8",
            };
            map[file] = (ms.ToArray(), type);
        }
        return map.ToFrozenDictionary(StringComparer.Ordinal);
    }

    /// <summary>Only the gateway's own script and styles run on the dashboard; no framing, no sniffing.</summary>
    private const string Policy = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'";

    public static IEndpointRouteBuilder MapDashboard(this IEndpointRouteBuilder app)
    {
        var dashboard = app.MapGroup("/dashboard").AddEndpointFilter(async (ctx, next) =>
        {
            var headers = ctx.HttpContext.Response.Headers;
            headers.ContentSecurityPolicy = Policy;
            headers.XContentTypeOptions = "nosniff";
            headers.CacheControl = "no-store";
            return await next(ctx);
        });
        dashboard.MapGet("", (HttpContext ctx, BursarOptions options) =>
        {
            if (string.IsNullOrEmpty(options.AdminKey))
                return Page(HttpStatusCode.NotFound, "login.html", "The dashboard is off: set Bursar:AdminKey to enable it.");
            return AdminApi.HasAdminKey(ctx.Request, options.AdminKey) ? Asset("dashboard.html") : Page(HttpStatusCode.Unauthorized, "login.html", "");
        });
        dashboard.MapPost("/login", async (HttpContext ctx, BursarOptions options) =>
        {
            if (string.IsNullOrEmpty(options.AdminKey))
                return Page(HttpStatusCode.NotFound, "login.html", "The dashboard is off: set Bursar:AdminKey to enable it.");
            var key = ctx.Request.HasFormContentType ? (await ctx.Request.ReadFormAsync(ctx.RequestAborted).ConfigureAwait(false))["key"].ToString() : "";
            if (!System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(System.Text.Encoding.UTF8.GetBytes(key), System.Text.Encoding.UTF8.GetBytes(options.AdminKey)))
                return Page(HttpStatusCode.Unauthorized, "login.html", "That is not the admin key (Bursar:AdminKey).");
            ctx.Response.Cookies.Append(AdminApi.AdminCookie, key, new CookieOptions
            {
                HttpOnly = true, SameSite = SameSiteMode.Strict, Secure = ctx.Request.IsHttps, Path = "/", MaxAge = TimeSpan.FromHours(12),
            });
            return Results.Redirect("/dashboard");
        }).DisableAntiforgery();
        dashboard.MapPost("/logout", (HttpContext ctx) =>
        {
            ctx.Response.Cookies.Delete(AdminApi.AdminCookie, new CookieOptions { Path = "/" });
            return Results.Redirect("/dashboard");
        }).DisableAntiforgery();
        dashboard.MapGet("/assets/{file}", (string file) => Assets.ContainsKey(file) && !file.EndsWith(".html", StringComparison.Ordinal)
            ? Asset(file) : Results.NotFound());
        return app;
    }

    private static IResult Asset(string file)
    {
        var (body, type) = Assets[file];
        return Results.Bytes(body, type);
    }

    private static IResult Page(HttpStatusCode status, string file, string error)
    {
        var html = System.Text.Encoding.UTF8.GetString(Assets[file].Body).Replace("{{error}}", WebUtility.HtmlEncode(error), StringComparison.Ordinal);
        return Results.Content(html, "text/html; charset=utf-8", statusCode: (int)status);
    }
}
