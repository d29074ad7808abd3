//! The pure half of `kubectl stepwise dashboard`: what each page shows, decided from the objects
//! the server's watches hold (`view`), the lines a chart draws from an analysis condition
//! (`bounds`), the pod template diff (`diff`), and the page itself, embedded in the binary.

pub mod bounds;
pub mod diff;
pub mod view;

/// The page, its script and its style: embedded, so that nothing is fetched from elsewhere.
pub const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("assets/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("/app.css", "text/css; charset=utf-8", include_str!("assets/app.css")),
];
