using Bursar.Hosting;
using System.Collections.Frozen;
using System.Net;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Bursar.Gateway.Dashboard;

/// <summary>
/// <c>/dashboard</c>: the advisor's web face, served by the gateway with no external assets. Signing in with the admin key starts a
/// server-side session (<see cref="AdminAuth"/>) whose random token goes in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS) that
/// the admin reports API accepts; the page draws its charts from <c>/admin/reports/*</c>. Sign-out ends the session.
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
        dashboard.MapGet("", (HttpContext ctx, AdminAuth auth) =>
        {
            if (!auth.Enabled)
                return Page(HttpStatusCode.NotFound, "login.html", "The dashboard is off: set Bursar:AdminKey to enable it.");
            return auth.Check(ctx, out var retryAfter) switch
            {
                AdminCheck.Ok => Asset("dashboard.html"),
                AdminCheck.Throttled => ThrottledPage(ctx, retryAfter),
                _ => Page(HttpStatusCode.Unauthorized, "login.html", ""),
            };
        });
        dashboard.MapPost("/login", async (HttpContext ctx, AdminAuth auth, BursarOptions options) =>
        {
            if (!auth.Enabled)
                return Page(HttpStatusCode.NotFound, "login.html", "The dashboard is off: set Bursar:AdminKey to enable it.");
            var key = ctx.Request.HasFormContentType ? (await ctx.Request.ReadFormAsync(ctx.RequestAborted).ConfigureAwait(false))["key"].ToString() : "";
            switch (auth.Attempt(ctx, auth.IsAdminKey(key), out var retryAfter))
            {
                case AdminCheck.Throttled:
                    return ThrottledPage(ctx, retryAfter);
                case AdminCheck.Wrong:
                    return Page(HttpStatusCode.Unauthorized, "login.html", "That is not the admin key (Bursar:AdminKey).");
            }
            // the cookie carries a random session token, never the admin key; the session ends after a fixed lifetime or at sign-out
            ctx.Response.Cookies.Append(AdminAuth.SessionCookie, auth.CreateSession(), CookieFor(ctx, options.DashboardSessionLifetime));
            return Results.Redirect("/dashboard");
        }).DisableAntiforgery();
        dashboard.MapPost("/logout", (HttpContext ctx, AdminAuth auth) =>
        {
            if (ctx.Request.Cookies[AdminAuth.SessionCookie] is { Length: > 0 } token) auth.EndSession(token);
            ctx.Response.Cookies.Delete(AdminAuth.SessionCookie, CookieFor(ctx, null));
            return Results.Redirect("/dashboard");
        }).DisableAntiforgery();
        dashboard.MapGet("/assets/{file}", (string file) => Assets.ContainsKey(file) && !file.EndsWith(".html", StringComparison.Ordinal)
            ? Asset(file) : Results.NotFound());
        return app;
    }

    /// <summary>HttpOnly, SameSite=Strict, whole-site; Secure whenever the request came over HTTPS.</summary>
    private static CookieOptions CookieFor(HttpContext ctx, TimeSpan? maxAge) => new()
    {
        HttpOnly = true, SameSite = SameSiteMode.Strict, Secure = ctx.Request.IsHttps, Path = "/", MaxAge = maxAge, IsEssential = true,
    };

    private static IResult ThrottledPage(HttpContext ctx, TimeSpan retryAfter)
    {
        var secs = Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds));
        ctx.Response.Headers.RetryAfter = secs.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return Page(HttpStatusCode.TooManyRequests, "login.html", $"Too many wrong admin keys from this address; try again in {secs} s.");
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
